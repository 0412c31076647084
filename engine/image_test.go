package engine

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"vhdkit/engine/crashfile"
)

// checkClean fails the test unless the image at path passes Check,
// bitmaps included. Every test that writes an image ends with it.
func checkClean(t testing.TB, path string) {
	t.Helper()
	rep, err := CheckPath(path, CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	for _, p := range rep.Problems {
		t.Errorf("check %s: %s", path, p)
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestRoundTripAgainstQemu(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []DiskType{TypeFixed, TypeDynamic} {
		path := filepath.Join(dir, typ.String()+".vhd")
		const size = 100<<20 + 512*7
		img, err := Create(path, CreateOptions{Type: typ, Size: size})
		if err != nil {
			t.Fatal(err)
		}
		model := make([]byte, size)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 200; i++ {
			off := rng.Int64N(size - 70000)
			buf := randBytes(rng, rng.IntN(70000))
			if i%5 == 0 {
				clear(buf)
			}
			if _, err := img.WriteAt(buf, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], buf)
		}
		got := make([]byte, size)
		if _, err := img.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model) {
			t.Fatalf("%s: read back differs", typ)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		checkClean(t, path)
		raw := filepath.Join(dir, "model.raw")
		if err := os.WriteFile(raw, model, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("qemu-img", "compare", "-f", "vpc", "-F", "raw", path, raw).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img compare: %v\n%s", err, out)
		}
	}
}

func TestZeroWritesAllocateNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(make([]byte, 8<<20), 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Zero(0, 64<<20, ZeroMayDeallocate); err != nil {
		t.Fatal(err)
	}
	if got := img.AllocatedBytes(); got != 0 {
		t.Errorf("allocated %d bytes after writing only zeros", got)
	}
	img.Close()
	checkClean(t, path)
}

// hostBytes is the space the host file system gives the file.
func hostBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestZeroWholeBlocksDeallocatesAndPunches(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	data := randBytes(rng, 16<<20)
	if _, err := img.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	before := hostBytes(t, path)
	// Zero blocks 1..4 whole and half of block 6.
	if err := img.Zero(2<<20, 8<<20, ZeroMayDeallocate); err != nil {
		t.Fatal(err)
	}
	if err := img.Zero(12<<20+4096, 1<<20, ZeroMayDeallocate); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := img.AllocatedBytes(), int64(8<<20); got != want {
		t.Errorf("allocated %d bytes, want %d", got, want)
	}
	if after := hostBytes(t, path); before-after < 7<<20 {
		t.Errorf("host space went from %d to %d bytes: deallocated blocks were not punched", before, after)
	}
	clear(data[2<<20 : 10<<20])
	clear(data[12<<20+4096 : 13<<20+4096])
	got := make([]byte, len(data))
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("data differs after zeroing")
	}
	ext, err := img.Extents(0, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{0, 2 << 20, ExtentData}, {2 << 20, 8 << 20, ExtentHole}, {10 << 20, 6 << 20, ExtentData}}
	if !equalExtents(ext, want) {
		t.Errorf("extents %v, want %v", ext, want)
	}
	img.Close()
	checkClean(t, path)
}

func equalExtents(a, b []Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestExtentsFollowSectorBitmaps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: 8 << 20, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	one := bytes.Repeat([]byte{1}, 1024)
	for _, off := range []int64{0, 4096, 1<<20 + 512, 7<<20 + 1<<20 - 1024} {
		if _, err := img.WriteAt(one, off); err != nil {
			t.Fatal(err)
		}
	}
	got, err := img.Extents(0, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{
		{0, 1024, ExtentData}, {1024, 3072, ExtentHole}, {4096, 1024, ExtentData},
		{5120, 1<<20 + 512 - 5120, ExtentHole}, {1<<20 + 512, 1024, ExtentData},
		{1<<20 + 1536, 8<<20 - 1024 - (1<<20 + 1536), ExtentHole}, {8<<20 - 1024, 1024, ExtentData},
	}
	if !equalExtents(got, want) {
		t.Errorf("extents\n got %v\nwant %v", got, want)
	}
	img.Close()
	checkClean(t, path)
}

func TestSecondWriterRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	_, err = Open(path, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second writer: got %v, want ErrLocked", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(path)) {
		t.Errorf("error %q does not name the image", err)
	}
	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrLocked) {
		t.Errorf("reader while a writer holds it: got %v, want ErrLocked", err)
	}
	ro, err := Open(path, Options{ReadOnly: true, NoLock: true})
	if err != nil {
		t.Fatalf("NoLock reader: %v", err)
	}
	ro.Close()
}

func TestReadersShare(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.vhd")
	img, err := Create(path, CreateOptions{Type: TypeFixed, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	a, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("second reader: %v", err)
	}
	b.Close()
	if _, err := Open(path, Options{}); !errors.Is(err, ErrLocked) {
		t.Errorf("writer while a reader holds it: got %v, want ErrLocked", err)
	}
	if _, err := a.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write to read-only image: got %v, want ErrReadOnly", err)
	}
}

func TestOutOfRange(t *testing.T) {
	img, err := CreateFile(crashfile.New(), "mem", CreateOptions{Type: TypeDynamic, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	if n, err := img.ReadAt(buf, 1<<20-512); n != 512 || err == nil {
		t.Errorf("read across the end: n=%d err=%v, want 512 and io.EOF", n, err)
	}
	if _, err := img.WriteAt(buf, 1<<20-512); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("write across the end: %v", err)
	}
	if err := img.Zero(-1, 5, ZeroMayDeallocate); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("zero at -1: %v", err)
	}
	if _, err := img.Extents(0, 2<<20); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("extents past the end: %v", err)
	}
}

func TestDifferencingLayerReadsParent(t *testing.T) {
	const size = 4 << 20
	parentData := randBytes(rand.New(rand.NewPCG(5, 6)), size)
	parent, err := CreateFile(crashfile.New(), "parent", CreateOptions{Type: TypeFixed, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	parent.WriteAt(parentData, 0)
	pf := parent.Footer()
	child, err := CreateFile(crashfile.New(), "child", CreateOptions{Type: TypeDifferencing, Size: size, BlockSize: 1 << 20,
		Parent: &ParentInfo{UUID: pf.UUID, Timestamp: pf.Timestamp, Name: "parent.vhd",
			Locators: []LocatorPath{{LocatorW2ru, `.\parent.vhd`}, {LocatorMacX, "/tmp/dir with space/parent.vhd"}}}})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := child.ReadAt(buf, 0); !errors.Is(err, ErrNoParent) {
		t.Fatalf("read without parent: %v, want ErrNoParent", err)
	}
	child.SetParent(parent)
	model := append([]byte(nil), parentData...)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 50; i++ {
		off := rng.Int64N(size - 5000)
		b := randBytes(rng, rng.IntN(5000))
		if i%4 == 0 {
			clear(b) // zeros over parent data must be stored, not elided
		}
		if _, err := child.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], b)
	}
	if err := child.Trim(2<<20, 1<<20); err != nil { // whole block: parent shows again
		t.Fatal(err)
	}
	copy(model[2<<20:3<<20], parentData[2<<20:3<<20])
	got := make([]byte, size)
	if _, err := child.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Error("child read differs from the model")
	}
	h := child.Header()
	if h.ParentName != "parent.vhd" || h.ParentUUID != pf.UUID {
		t.Errorf("parent fields: %q %s", h.ParentName, h.ParentUUID)
	}
	locs, err := child.ParentLocators()
	if err != nil {
		t.Fatal(err)
	}
	if len(locs) != 2 || locs[0].Path != `.\parent.vhd` || locs[1].Path != "/tmp/dir with space/parent.vhd" {
		t.Errorf("locators: %+v", locs)
	}
}

// Deallocating the blocks at the end of the file leaves space no BAT
// entry references; Close gives it back so check stays clean.
func TestCloseCutsFreedTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(rand.New(rand.NewPCG(5, 6)), 4<<20)
	if _, err := img.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := img.Trim(2<<20, 2<<20); err != nil { // the last block in the file
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, path)
	img, err = Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, 4<<20)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	clear(data[2<<20:])
	if !bytes.Equal(got, data) {
		t.Error("data differs after trim and close")
	}
}
