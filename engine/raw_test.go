package engine

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestRawDiskReadWriteExtents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.raw")
	const size = 8<<20 + 1000 // not a whole sector: raw disks need not be
	d, err := CreateRaw(path, size)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateRaw(path, size); !errors.Is(err, os.ErrExist) {
		t.Fatalf("CreateRaw over an existing file: %v, want ErrExist", err)
	}
	data := bytes.Repeat([]byte{0xab}, 1<<20)
	if _, err := d.WriteAt(data, 2<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte{1}, size); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write past the end: %v, want ErrOutOfRange", err)
	}
	exts, err := d.Extents(0, size)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{0, 2 << 20, ExtentHole}, {2 << 20, 1 << 20, ExtentData}, {3 << 20, size - 3<<20, ExtentHole}}
	if !equalExtents(exts, want) {
		t.Fatalf("extents %v, want %v", exts, want)
	}
	// A window inside the data and one inside a hole.
	if exts, _ := d.Extents(2<<20+512, 4096); !equalExtents(exts, []Extent{{2<<20 + 512, 4096, ExtentData}}) {
		t.Errorf("extents inside data: %v", exts)
	}
	if exts, _ := d.Extents(5<<20, 4096); !equalExtents(exts, []Extent{{5 << 20, 4096, ExtentHole}}) {
		t.Errorf("extents inside a hole: %v", exts)
	}

	// Reading across the end returns what is there and io.EOF.
	buf := make([]byte, 2000)
	n, err := d.ReadAt(buf, size-1000)
	if n != 1000 || err != io.EOF {
		t.Fatalf("read across the end: %d, %v", n, err)
	}

	// Zero with deallocation punches a hole; keeping allocation zeroes.
	if err := d.Zero(2<<20, 512<<10, ZeroMayDeallocate); err != nil {
		t.Fatal(err)
	}
	if err := d.Zero(2<<20+512<<10, 4096, ZeroKeepAllocated); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if _, err := d.ReadAt(got, 2<<20); err != nil {
		t.Fatal(err)
	}
	model := bytes.Clone(data)
	clear(model[:512<<10+4096])
	if !bytes.Equal(got, model) {
		t.Fatal("zeroed range does not read as zeros")
	}
	exts, _ = d.Extents(0, size)
	if exts[0].State != ExtentHole || exts[0].Len != 2<<20+512<<10 {
		t.Errorf("punched range is not a hole: %v", exts)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second close: %v, want ErrClosed", err)
	}

	// Read-only: writes refused; a writer and a reader exclude each other.
	ro, err := OpenRaw(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if ro.Size() != size || ro.IsDevice() {
		t.Errorf("reopened: size %d device %v", ro.Size(), ro.IsDevice())
	}
	if _, err := ro.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write to a read-only disk: %v", err)
	}
	if _, err := OpenRaw(path, false); !errors.Is(err, ErrLocked) {
		t.Errorf("open for writing while read: %v, want ErrLocked", err)
	}
	ro.Close()
}

func TestOpenRawRefusesFolder(t *testing.T) {
	if _, err := OpenRaw(t.TempDir(), true); err == nil {
		t.Fatal("OpenRaw opened a folder")
	}
}

func TestIsVHD(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []DiskType{TypeFixed, TypeDynamic} {
		path := filepath.Join(dir, typ.String()+".vhd")
		img, err := Create(path, CreateOptions{Type: typ, Size: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		img.Close()
		if ok, err := IsVHD(path); !ok || err != nil {
			t.Errorf("%s: IsVHD = %v, %v", typ, ok, err)
		}
		d, err := OpenAny(path, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.(*Image); !ok {
			t.Errorf("%s: OpenAny gave %T", typ, d)
		}
		d.Close()
	}
	// A dynamic image whose end is damaged is still a VHD (the copy at 0).
	dyn := filepath.Join(dir, "dynamic.vhd")
	st, _ := os.Stat(dyn)
	f, _ := os.OpenFile(dyn, os.O_WRONLY, 0)
	f.WriteAt([]byte("garbage!"), st.Size()-FooterSize)
	f.Close()
	if ok, _ := IsVHD(dyn); !ok {
		t.Error("dynamic image with a damaged end footer not detected")
	}
	raw := filepath.Join(dir, "disk.raw")
	os.WriteFile(raw, make([]byte, 4096), 0o644)
	if ok, _ := IsVHD(raw); ok {
		t.Error("raw file detected as a VHD")
	}
	d, err := OpenAny(raw, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.(*RawDisk); !ok {
		t.Errorf("raw: OpenAny gave %T", d)
	}
	d.Close()
	// A file shorter than a footer that starts with the cookie is a VHD
	// cut short (as check calls it), not a raw disk; without the cookie
	// it is raw.
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("conectix"), 0o644)
	if ok, err := IsVHD(short); !ok || err != nil {
		t.Errorf("8-byte file saying conectix: IsVHD = %v, %v", ok, err)
	}
	os.WriteFile(short, []byte("12345678"), 0o644)
	if ok, err := IsVHD(short); ok || err != nil {
		t.Errorf("8-byte file: IsVHD = %v, %v", ok, err)
	}
}
