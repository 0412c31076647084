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
	// gap puts that many bytes of junk between a fixed image's data and
	// its footer (check reports them; images in the wild have them).
	gap int64
	// tap makes a blktap image (with a batmap), packed lays it out as
	// blktap does, with no free space before the first block
	// (packedImage), so the relocation goes past the end and then back.
	tap, packed bool
}

var relocateCases = []relocateCase{
	{name: "set-parent", typ: TypeDifferencing, size: 4 << 20, parent: true, op: func(img *Image) error {
		return img.SetParentLink(ParentInfo{UUID: UUID{9}, Timestamp: 7, Name: "new.vhd",
			Locators: []LocatorPath{{LocatorW2ru, `.\new.vhd`}, {LocatorMacX, "/srv/images/new.vhd"}}})
	}},
	{name: "grow dynamic past the BAT", typ: TypeDynamic, size: 4 << 20, newSize: 40 << 20, op: func(img *Image) error { return img.Resize(40<<20, false) }},
	{name: "grow dynamic past the BAT's sector", typ: TypeDynamic, size: 4 << 20, newSize: 300 << 20, op: func(img *Image) error { return img.Resize(300<<20, false) }},
	{name: "set-parent packed blktap", typ: TypeDifferencing, size: 4 << 20, parent: true, tap: true, packed: true, op: func(img *Image) error {
		return img.SetParentLink(ParentInfo{UUID: UUID{9}, Timestamp: 7, Name: "new.vhd",
			Locators: []LocatorPath{{LocatorW2ru, `.\new.vhd`}, {LocatorMacX, "/srv/images/new.vhd"}}})
	}},
	{name: "grow packed blktap in the BAT's sector", typ: TypeDynamic, size: 4 << 20, newSize: 40 << 20, tap: true, packed: true, op: func(img *Image) error { return img.Resize(40<<20, false) }},
	{name: "grow packed blktap past the BAT's sector", typ: TypeDynamic, size: 4 << 20, newSize: 200 << 20, tap: true, packed: true, op: func(img *Image) error { return img.Resize(200<<20, false) }},
	{name: "shrink packed blktap", typ: TypeDynamic, size: 4 << 20, newSize: 3 << 20, tap: true, packed: true, op: func(img *Image) error { return img.Resize(3<<20, true) }},
	{name: "grow blktap past the BAT's sector", typ: TypeDynamic, size: 4 << 20, newSize: 300 << 20, tap: true, op: func(img *Image) error { return img.Resize(300<<20, false) }},
	{name: "shrink dynamic", typ: TypeDynamic, size: 4 << 20, newSize: 3 << 20, op: func(img *Image) error { return img.Resize(3<<20, true) }},
	{name: "grow fixed", typ: TypeFixed, size: 4 << 20, newSize: 6 << 20, op: func(img *Image) error { return img.Resize(6<<20, false) }},
	{name: "shrink fixed", typ: TypeFixed, size: 4 << 20, newSize: 3 << 20, op: func(img *Image) error { return img.Resize(3<<20, true) }},
	{name: "grow fixed past a gap", typ: TypeFixed, size: 4 << 20, gap: 4096, newSize: 5 << 20, op: func(img *Image) error { return img.Resize(5<<20, false) }},
	{name: "grow fixed into a gap", typ: TypeFixed, size: 4 << 20, gap: 1 << 20, newSize: 4<<20 + 64<<10, op: func(img *Image) error { return img.Resize(4<<20+64<<10, false) }},
	{name: "shrink fixed with a gap", typ: TypeFixed, size: 4 << 20, gap: 3072, newSize: 3 << 20, op: func(img *Image) error { return img.Resize(3<<20, true) }},
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
	if c.tap {
		opts.Creator = &tapCreator
	}
	if c.packed {
		data := randBytes(rand.New(rand.NewPCG(3, 3)), 2<<20)
		f = packedImage(t, c.typ, c.size, 1<<20, opts.Parent, data)
		img, err := OpenFile(f, "img", Options{})
		if err != nil {
			t.Fatal(err)
		}
		img.SetParent(zeroDisk(c.size))
		return f, img, data
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
	if c.gap > 0 {
		f, img = withGap(t, img, f, c.size, c.gap)
	}
	return f, img, data
}

// withGap closes a fixed image and reopens it with gap bytes of junk
// moved in between its data and its footer.
func withGap(t *testing.T, img *Image, f *crashfile.File, size, gap int64) (*crashfile.File, *Image) {
	t.Helper()
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	b := f.Bytes()
	footer := b[len(b)-FooterSize:]
	junk := bytes.Repeat([]byte{0xa5}, int(gap))
	g := crashfile.FromBytes(append(append(append([]byte{}, b[:size]...), junk...), footer...))
	img, err := OpenFile(g, "img", Options{})
	if err != nil {
		t.Fatal(err)
	}
	return g, img
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
					f, img, data := setupRelocate(t, c)
					crashed := crashAtSync(f, f.Syncs()+k, after, rand.New(rand.NewPCG(uint64(k), 5)), 3)
					if err := c.op(img); err != nil {
						t.Fatal(err)
					}
					for i, cf := range *crashed {
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
		for _, p := range rep.Problems {
			if p.Code == CodeBatmapStale {
				t.Fatalf("%s: blktap's batmap trusts a block that is not full: %s", where, p)
			}
		}
		if _, err := RepairFile(f, "crashed", RepairOptions{}); err != nil {
			t.Fatalf("%s: repair: %v", where, err)
		}
		if rep, err := Check(f, CheckOptions{Bitmaps: true}); err != nil || !rep.OK() {
			t.Fatalf("%s: check after repair: %v %+v", where, err, rep)
		}
	}
	if c.tap {
		if _, ok := diskBatmap(t, f.Bytes()); !ok {
			t.Fatalf("%s: blktap does not trust the batmap after repair", where)
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
		// The documented window (resizeFixed): until the operation ends,
		// a shrink's new footer may show in the old disk's space, and a
		// grown disk's new space may hold the old footer's bytes.
		at := c.newSize
		if c.newSize > c.size {
			at = c.size + c.gap
		}
		if at -= int64(len(data)); at < int64(len(rest)) {
			clear(rest[at:min(at+FooterSize, int64(len(rest)))])
		}
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

// crashAtSync arranges for f's sync number target to be crashed at: just
// before it (or, with after, just after it) the durable bytes and n
// random crashes (crashfile.Crash) go into the returned list.
func crashAtSync(f *crashfile.File, target int, after bool, rng *rand.Rand, n int) *[]*crashfile.File {
	var crashed []*crashfile.File
	grab := func() {
		crashed = append(crashed, crashfile.FromBytes(f.Durable()))
		for range n {
			crashed = append(crashed, f.Crash(rng))
		}
	}
	f.BeforeSync = func(i int) error {
		if i == target && !after {
			grab()
		}
		return nil
	}
	f.AfterSync = func(i int) {
		if i == target && after {
			grab()
		}
	}
	return &crashed
}
