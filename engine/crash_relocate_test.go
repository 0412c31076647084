package engine

// Power loss during the metadata changes that relocate and resizeFixed
// commit through the footer: at every sync of the operation (before and
// after it) and with several random subsets of the unsynced writes, the
// crashed file must open (after repair at most), pass Check, hold the
// old or the new metadata, and hold the data flushed before.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"vhdkit/engine/crashfile"
)

type relocateCase struct {
	name    string
	typ     DiskType
	size    int64
	op      func(img *Image) error
	newSize int64 // 0: the size does not change
	parent  bool  // the op re-links the parent
}

var relocateCases = []relocateCase{
	{name: "set-parent", typ: TypeDifferencing, size: 4 << 20, parent: true, op: func(img *Image) error {
		return img.SetParentLink(ParentInfo{UUID: UUID{9}, Timestamp: 7, Name: "new.vhd",
			Locators: []LocatorPath{{LocatorW2ru, `.\new.vhd`}, {LocatorMacX, "/srv/images/new.vhd"}}})
	}},
	{name: "grow dynamic past the BAT", typ: TypeDynamic, size: 4 << 20, newSize: 40 << 20, op: func(img *Image) error { return img.Resize(40<<20, false) }},
	{name: "shrink dynamic", typ: TypeDynamic, size: 4 << 20, newSize: 3 << 20, op: func(img *Image) error { return img.Resize(3<<20, true) }},
	{name: "grow fixed", typ: TypeFixed, size: 4 << 20, newSize: 6 << 20, op: func(img *Image) error { return img.Resize(6<<20, false) }},
	{name: "shrink fixed", typ: TypeFixed, size: 4 << 20, newSize: 3 << 20, op: func(img *Image) error { return img.Resize(3<<20, true) }},
}

// setupRelocate makes the image with 2 MiB of flushed data (the first
// 2 MiB; the rest is zero, so shrinks are allowed).
func setupRelocate(t *testing.T, c relocateCase) (*crashfile.File, *Image, []byte) {
	t.Helper()
	f := crashfile.New()
	opts := CreateOptions{Type: c.typ, Size: c.size, BlockSize: 1 << 20, UUID: UUID{1}, Time: time.Unix(1e9, 0)}
	if c.typ == TypeDifferencing {
		opts.Parent = &ParentInfo{UUID: UUID{8}, Name: "old.vhd", Locators: []LocatorPath{{LocatorW2ru, `.\old.vhd`}}}
	}
	img, err := CreateFile(f, "img", opts)
	if err != nil {
		t.Fatal(err)
	}
	img.SetParent(zeroDisk(c.size))
	data := randBytes(rand.New(rand.NewPCG(3, 3)), 2<<20)
	if _, err := img.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	return f, img, data
}

func TestCrashDuringRelocate(t *testing.T) {
	for _, c := range relocateCases {
		t.Run(c.name, func(t *testing.T) {
			f, img, _ := setupRelocate(t, c)
			before := f.Syncs()
			if err := c.op(img); err != nil {
				t.Fatal(err)
			}
			syncs := f.Syncs() - before
			if syncs == 0 {
				t.Fatal("the operation never synced")
			}
			for k := 1; k <= syncs; k++ {
				for _, after := range []bool{false, true} {
					var crashed []*crashfile.File
					f, img, data := setupRelocate(t, c)
					rng := rand.New(rand.NewPCG(uint64(k), 5))
					grab := func() {
						crashed = append(crashed, crashfile.FromBytes(f.Durable()))
						for range 3 {
							crashed = append(crashed, f.Crash(rng))
						}
					}
					target := f.Syncs() + k
					f.BeforeSync = func(n int) error {
						if n == target && !after {
							grab()
						}
						return nil
					}
					f.AfterSync = func(n int) {
						if n == target && after {
							grab()
						}
					}
					if err := c.op(img); err != nil {
						t.Fatal(err)
					}
					for i, cf := range crashed {
						where := fmt.Sprintf("sync %d/%d (after=%v) variant %d", k, syncs, after, i)
						verifyRelocated(t, c, cf, data, where)
					}
				}
			}
		})
	}
}

// verifyRelocated checks one crashed file.
func verifyRelocated(t *testing.T, c relocateCase, f *crashfile.File, data []byte, where string) {
	t.Helper()
	if rep, err := Check(f, CheckOptions{Bitmaps: true}); err != nil || !rep.OK() {
		if _, err := RepairFile(f, "crashed", RepairOptions{}); err != nil {
			t.Fatalf("%s: repair: %v", where, err)
		}
		if rep, err := Check(f, CheckOptions{Bitmaps: true}); err != nil || !rep.OK() {
			t.Fatalf("%s: check after repair: %v %+v", where, err, rep)
		}
	}
	img, err := OpenFile(f.Reopen(), "crashed", Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("%s: open: %v", where, err)
	}
	defer img.Close()
	img.SetParent(zeroDisk(img.Size()))
	size := img.Size()
	if size != c.size && size != c.newSize {
		t.Fatalf("%s: size %d, want %d or %d", where, size, c.size, c.newSize)
	}
	got := make([]byte, size)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatalf("%s: read: %v", where, err)
	}
	if !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("%s: flushed data lost", where)
	}
	rest := got[len(data):]
	if c.typ == TypeFixed && size > min(c.size, c.newSize) {
		// The documented window (resizeFixed): the footer of the smaller
		// size may show in the larger disk's space until the operation
		// ends.
		at := min(c.size, c.newSize) - int64(len(data))
		clear(rest[at : at+FooterSize])
	}
	if !isZero(rest) {
		t.Fatalf("%s: space past the data is not zero", where)
	}
	if c.parent {
		h := img.Header()
		old, nu := h.ParentUUID == UUID{8} && h.ParentName == "old.vhd", h.ParentUUID == UUID{9} && h.ParentName == "new.vhd"
		if !old && !nu {
			t.Fatalf("%s: parent link is neither the old nor the new: %s %q", where, h.ParentUUID, h.ParentName)
		}
		locs, err := img.ParentLocators()
		if err != nil || (nu && len(locs) != 2) || (old && len(locs) != 1) {
			t.Fatalf("%s: locators %v %v", where, locs, err)
		}
	}
}
