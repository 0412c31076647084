package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func qemuSize(t *testing.T, path string) int64 {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-f", "vpc", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info.VirtualSize
}

func TestResize(t *testing.T) {
	for _, typ := range []DiskType{TypeFixed, TypeDynamic} {
		t.Run(typ.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.vhd")
			const size = 6 << 20
			img, err := Create(path, CreateOptions{Type: typ, Size: size, BlockSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(11, 12))
			data := randBytes(rng, 3<<20)
			if _, err := img.WriteAt(data, 512); err != nil {
				t.Fatal(err)
			}
			// Grow past what the BAT holds (6 entries): the BAT moves.
			const big = 40<<20 + 512*5
			if err := img.Resize(big, false); err != nil {
				t.Fatal(err)
			}
			tail := randBytes(rng, 8192)
			if _, err := img.WriteAt(tail, big-8192); err != nil {
				t.Fatal(err)
			}
			img.Close()
			checkClean(t, path)
			if got := qemuSize(t, path); got != big {
				t.Errorf("qemu-img sees %d bytes after growing, want %d", got, big)
			}
			img, err = Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(data))
			img.ReadAt(got, 512)
			if !bytes.Equal(got, data) {
				t.Error("data changed by growing")
			}
			got = make([]byte, 8192)
			img.ReadAt(got, big-8192)
			if !bytes.Equal(got, tail) {
				t.Error("tail written after growing reads back wrong")
			}
			if got, _ := img.ReadAt(make([]byte, 512), size); got != 512 {
				t.Error("cannot read the grown space")
			}
			if err := img.Resize(4<<20, false); err == nil {
				t.Error("shrink without asking succeeded")
			}
			if err := img.Resize(4<<20, true); !errors.Is(err, ErrShrinkData) {
				t.Errorf("shrink over data: %v, want ErrShrinkData", err)
			}
			if err := img.Zero(big-8192, 8192, ZeroMayDeallocate); err != nil {
				t.Fatal(err)
			}
			if err := img.Resize(4<<20, true); err != nil {
				t.Fatalf("shrink over zeros: %v", err)
			}
			img.Close()
			checkClean(t, path)
			if got := qemuSize(t, path); got != 4<<20 {
				t.Errorf("qemu-img sees %d bytes after shrinking, want %d", got, 4<<20)
			}
		})
	}
}

func TestSetParentLinkIsCommittedByTheFooter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "child.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDifferencing, Size: 2 << 20,
		Parent: &ParentInfo{UUID: NewUUID(), Name: "old.vhd", Locators: []LocatorPath{{LocatorW2ru, `.\old.vhd`}}}})
	if err != nil {
		t.Fatal(err)
	}
	img.SetParent(zeroDisk(2 << 20))
	if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 4096), 8192); err != nil {
		t.Fatal(err)
	}
	id := NewUUID()
	long := "/a/very/long/" + string(bytes.Repeat([]byte("x"), 3000)) + "/new.vhd"
	if err := img.SetParentLink(ParentInfo{UUID: id, Timestamp: 42, Name: "new.vhd",
		Locators: []LocatorPath{{LocatorW2ru, `.\new.vhd`}, {LocatorMacX, long}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{8}, 4096), 1<<20); err != nil {
		t.Fatal(err)
	}
	img.Close()
	checkClean(t, path)
	img, err = Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	h := img.Header()
	if h.ParentUUID != id || h.ParentTimestamp != 42 || h.ParentName != "new.vhd" {
		t.Errorf("parent fields %s %d %q", h.ParentUUID, h.ParentTimestamp, h.ParentName)
	}
	locs, _ := img.ParentLocators()
	if len(locs) != 2 || locs[1].Path != long {
		t.Errorf("locators %v", locs)
	}
	img.SetParent(zeroDisk(2 << 20))
	got := make([]byte, 4096)
	img.ReadAt(got, 8192)
	if !bytes.Equal(got, bytes.Repeat([]byte{7}, 4096)) {
		t.Error("data written before the re-link is gone")
	}
}

// zeroDisk is a parent that holds nothing.
type zeroDisk int64

func (z zeroDisk) Size() int64 { return int64(z) }
func (z zeroDisk) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}
func (z zeroDisk) WriteAt([]byte, int64) (int, error) { return 0, ErrReadOnly }
func (z zeroDisk) Flush() error                       { return nil }
func (z zeroDisk) Zero(int64, int64, ZeroMode) error  { return ErrReadOnly }
func (z zeroDisk) Trim(int64, int64) error            { return ErrReadOnly }
func (z zeroDisk) Extents(off, n int64) ([]Extent, error) {
	return []Extent{{off, n, ExtentHole}}, nil
}
func (z zeroDisk) ReadOnly() bool { return true }
func (z zeroDisk) Close() error   { return nil }

// A differencing image's data under a clear bit is a write that never
// reached a flush: repair zeros it, so the parent still shows and check
// is clean.
func TestRepairZerosDisownedChildData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "child.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDifferencing, Size: 2 << 20, BlockSize: 1 << 20,
		Parent: &ParentInfo{UUID: NewUUID(), Name: "p.vhd"}})
	if err != nil {
		t.Fatal(err)
	}
	img.SetParent(zeroDisk(2 << 20))
	if _, err := img.WriteAt(bytes.Repeat([]byte{5}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	e := img.sparse.entry(0)
	img.Close()
	// Data lands under clear bits, as a crash before the bitmap's flush
	// leaves it.
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt(bytes.Repeat([]byte{6}, 1024), img.sparse.dataOff(e)+8192)
	f.Close()
	if rep, _ := CheckPath(path, CheckOptions{Bitmaps: true}); rep.OK() {
		t.Fatal("check missed data under a clear bit")
	}
	if _, err := Repair(path, RepairOptions{Bitmaps: true}); err != nil {
		t.Fatal(err)
	}
	checkClean(t, path)
	img, err = Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	img.SetParent(zeroDisk(2 << 20))
	got := make([]byte, 16384)
	img.ReadAt(got, 0)
	want := append(bytes.Repeat([]byte{5}, 4096), make([]byte, 12288)...)
	if !bytes.Equal(got, want) {
		t.Error("repair changed what the child reads")
	}
}
