package chains

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
	"time"

	"vhdkit/engine"
	"vhdkit/engine/crashfile"
)

// seedMeta makes small images of each type in memory (a few KiB: the
// fuzzer minimizes slowly on big inputs).
func seedMeta(f *testing.F) [][]byte {
	f.Helper()
	parent := &engine.ParentInfo{UUID: engine.UUID{7}, Timestamp: 5, Name: "base.vhd",
		Locators: []engine.LocatorPath{{Code: engine.LocatorW2ru, Path: `.\base.vhd`}, {Code: engine.LocatorW2ku, Path: `C:\vms\base.vhd`}, {Code: engine.LocatorMacX, Path: "/srv/vms/base.vhd"}}}
	var out [][]byte
	for _, o := range []engine.CreateOptions{
		{Type: engine.TypeFixed, Size: 4096},
		{Type: engine.TypeDynamic, Size: 64 << 10, BlockSize: 4096},
		{Type: engine.TypeDifferencing, Size: 64 << 10, BlockSize: 4096, Parent: parent},
	} {
		o.Time = time.Unix(1e9, 0)
		file := crashfile.New()
		img, err := engine.CreateFile(file, "seed.vhd", o)
		if err != nil {
			f.Fatal(err)
		}
		img.SetParent(zeroParent(o.Size))
		img.WriteAt(bytes.Repeat([]byte{1}, 1024), 2048)
		if err := img.Close(); err != nil {
			f.Fatal(err)
		}
		out = append(out, file.Bytes())
	}
	return out
}

// zeroParent is a parent that holds nothing.
type zeroParent int64

func (z zeroParent) Size() int64 { return int64(z) }
func (z zeroParent) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}
func (z zeroParent) WriteAt([]byte, int64) (int, error)       { return 0, engine.ErrReadOnly }
func (z zeroParent) Flush() error                             { return nil }
func (z zeroParent) Zero(int64, int64, engine.ZeroMode) error { return engine.ErrReadOnly }
func (z zeroParent) Trim(int64, int64) error                  { return engine.ErrReadOnly }
func (z zeroParent) Extents(off, n int64) ([]engine.Extent, error) {
	return []engine.Extent{{Off: off, Len: n, State: engine.ExtentHole}}, nil
}
func (z zeroParent) ReadOnly() bool { return true }
func (z zeroParent) Close() error   { return nil }

// FuzzReadMeta: the folder scans' reader of footer, header and locators
// never panics, allocates at most what eight maximal locators take, and
// agrees with the engine's full open on every image the engine opens
// (which footer, the disk's identity and size, the parent link).
func FuzzReadMeta(f *testing.F) {
	for _, b := range seedMeta(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := readMetaFrom(bytes.NewReader(data), int64(len(data)))
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 2<<20 {
			t.Fatalf("readMeta of %d bytes allocated %d bytes", len(data), got)
		}
		if err != nil && !errors.Is(err, engine.ErrCorrupt) {
			t.Fatalf("an in-memory image gave an error that is not corruption: %v", err)
		}
		img, ierr := engine.OpenFile(crashfile.FromBytes(data), "fuzz.vhd", engine.Options{ReadOnly: true})
		if ierr != nil {
			return
		}
		defer img.Close()
		if err != nil {
			t.Fatalf("the engine opens the image, the scan does not: %v", err)
		}
		sameMeta(t, m, img)
	})
}

func sameMeta(t *testing.T, m *imageMeta, img *engine.Image) {
	t.Helper()
	a, b := m.Footer(), img.Footer()
	if a != b {
		t.Fatalf("footers differ: scan %+v, engine %+v", a, b)
	}
	if img.Header() == nil {
		if m.Header() != nil {
			t.Fatal("the scan found a header the engine did not")
		}
		return
	}
	if *m.Header() != *img.Header() {
		t.Fatalf("headers differ: scan %+v, engine %+v", *m.Header(), *img.Header())
	}
	want, err := img.ParentLocators()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := m.ParentLocators()
	if len(got) != len(want) {
		t.Fatalf("locators: scan %v, engine %v", got, want)
	}
	for i := range got {
		if got[i].Code != want[i].Code || got[i].Path != want[i].Path || (got[i].Err == nil) != (want[i].Err == nil) {
			t.Fatalf("locator %d: scan %+v, engine %+v", i, got[i], want[i])
		}
	}
}

// TestReadMetaStrayFooter: a dynamic image whose file ends in a valid
// footer of another disk (a guest's VHD inside the disk, left at the end
// by a crash before the real footer followed) is read from its copy at
// offset 0, as the engine reads it; the scan took the stray footer and
// saw another disk.
func TestReadMetaStrayFooter(t *testing.T) {
	file := crashfile.New()
	img, err := engine.CreateFile(file, "d.vhd", engine.CreateOptions{Type: engine.TypeDynamic, Size: 64 << 10, BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	data := file.Bytes()
	other, err := engine.ParseFooter(data[len(data)-512:], 0)
	if err != nil {
		t.Fatal(err)
	}
	other.UUID, other.CurrentSize = engine.NewUUID(), 1<<30
	raw := other.Marshal()
	copy(data[len(data)-512:], raw[:])
	m, err := readMetaFrom(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.OpenFile(crashfile.FromBytes(data), "d.vhd", engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	sameMeta(t, m, e)
}
