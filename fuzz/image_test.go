package fuzz

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"vhdkit/engine"
	"vhdkit/fuzz/vhdgen"
)

const (
	// maxInput skips bigger inputs (the mutator makes few).
	maxInput = maxSeedFile
	// readBudget bounds the bytes FuzzOpen reads from one disk: a tiny
	// file can describe a 2040 GiB disk of holes.
	readBudget = 4 << 20
	// chunk is the size of FuzzOpen's reads.
	chunk = 64 << 10
)

// openBudget is the most an open, a full Check and every accessor may
// allocate for an input of n bytes. Everything the engine sizes by a
// header field must be bounded by the file size, so this is a few MiB
// plus a small multiple of the input (the BAT, the in-memory files'
// pages, bitmaps).
func openBudget(n int) uint64 { return 6<<20 + 64*uint64(n) }

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

func hasFatal(r *engine.Report) bool {
	for _, p := range r.Problems {
		if p.Fatal {
			return true
		}
	}
	return false
}

// FuzzOpen opens an image from bytes read-only (with the checksums of its
// footers and header fixed up first, if fix is set), checks it, and uses every
// accessor: Footer, Header, Size, Extents of the whole disk, reads of the
// whole disk (up to readBudget) compared with an independent decoding of
// the bytes, AllocatedBytes. Check and OpenFile must agree: an image Check
// finds no fatal problem in opens, and bytes Check calls another format
// (a *FormatError) OpenFile refuses the same way.
func FuzzOpen(f *testing.F) {
	for _, b := range seedImages() {
		f.Add(b, false)
		f.Add(b, true)
	}
	for _, b := range detectSeeds() { // other formats: not VHDs
		f.Add(b, false)
	}
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if len(data) > maxInput {
			return
		}
		if fix {
			data = vhdgen.FixChecksums(data)
		}
		before := totalAlloc()
		rep, err := engine.Check(NewMemFile(data, 0), engine.CheckOptions{Bitmaps: true})
		if errors.Is(err, engine.ErrOtherFormat) {
			// Not a VHD (a qcow2's magic...): open must say so too.
			if _, err := engine.OpenFile(NewMemFile(data, 0), "fuzz.vhd", engine.Options{ReadOnly: true}); !errors.Is(err, engine.ErrOtherFormat) || errors.Is(err, engine.ErrCorrupt) {
				t.Fatalf("Check says another format, open says %v", err)
			}
			return
		}
		if errors.Is(err, engine.ErrNoFooter) {
			// Nothing of a VHD anywhere: check says "not a VHD", and
			// open must refuse it the same way.
			if _, err := engine.OpenFile(NewMemFile(data, 0), "fuzz.vhd", engine.Options{ReadOnly: true}); !errors.Is(err, engine.ErrNoFooter) {
				t.Fatalf("Check says there is no VHD footer, open says %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Check of an in-memory file failed: %v", err)
		}
		img, err := engine.OpenFile(NewMemFile(data, 0), "fuzz.vhd", engine.Options{ReadOnly: true})
		if err != nil {
			corruptOnly(t, err)
			if !hasFatal(rep) {
				t.Fatalf("open failed (%v) but Check found nothing fatal: %v", err, rep.Problems)
			}
		} else {
			exercise(t, img, data, rep)
		}
		salvageOpen(t, data, err == nil)
		if got := totalAlloc() - before; got > openBudget(len(data)) {
			t.Fatalf("a %d-byte image made Check, open and reads allocate %d bytes (budget %d)", len(data), got, openBudget(len(data)))
		}
	})
}

// salvageOpen opens data as vhd convert --salvage does. An image that
// opens the usual way opens so too, loses nothing (but lists the blocks
// whose bitmap is a hole) and reads the same;
// one that does not may be refused, as corrupt; one that opens reads
// wholly (within readBudget) without an error, and its lost ranges lie
// in the disk, in order, on sector boundaries, and add up.
func salvageOpen(t *testing.T, data []byte, opens bool) {
	img, err := engine.OpenFile(NewMemFile(data, 0), "fuzz.vhd", engine.Options{ReadOnly: true, Salvage: true})
	if err != nil {
		if opens {
			t.Fatalf("salvage open of an image that opens: %v", err)
		}
		corruptOnly(t, err)
		return
	}
	defer img.Close()
	size := img.Size()
	if img.Type() == engine.TypeDifferencing {
		img.SetParent(patternDisk{size})
	}
	if lost := img.Lost(); lost != nil {
		for _, r := range lost.Ranges {
			// A bitmap the file holds as a hole (MemFile's zero
			// pages) reads as never written either way: listed, not
			// lost by the salvage.
			if opens && !strings.Contains(r.Why, "bitmap is a hole") {
				t.Fatalf("salvage of an image that opens lost %d bytes: %+v", lost.Bytes, lost.Ranges)
			}
		}
		var at, sum int64
		for _, r := range lost.Ranges {
			if r.Off < at || r.Len <= 0 || r.Off+r.Len > size || r.Off%engine.SectorSize != 0 || r.Why == "" {
				t.Fatalf("lost range %+v after %#x in a disk of %d bytes", r, at, size)
			}
			at, sum = r.Off+r.Len, sum+r.Len
		}
		if sum+lost.MoreBytes != lost.Bytes || lost.Bytes > size {
			t.Fatalf("lost ranges add up to %d+%d, report says %d (disk %d)", sum, lost.MoreBytes, lost.Bytes, size)
		}
	}
	var usual *engine.Image
	if opens {
		if usual, err = engine.OpenFile(NewMemFile(data, 0), "fuzz.vhd", engine.Options{ReadOnly: true}); err != nil {
			t.Fatal(err)
		}
		defer usual.Close()
		if usual.Type() == engine.TypeDifferencing {
			usual.SetParent(patternDisk{size})
		}
	}
	buf, want := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < min(size, readBudget); off += chunk {
		n := min(size-off, chunk)
		if _, err := img.ReadAt(buf[:n], off); err != nil {
			t.Fatalf("salvage read %d at %#x: %v", n, off, err)
		}
		if usual == nil {
			continue
		}
		if _, err := usual.ReadAt(want[:n], off); err != nil {
			t.Fatalf("read %d at %#x: %v", n, off, err)
		}
		if !bytes.Equal(buf[:n], want[:n]) {
			t.Fatalf("salvage read %d at %#x differs from the usual open's", n, off)
		}
	}
}

// exercise uses every read accessor of img, opened from data, and closes
// it.
func exercise(t *testing.T, img *engine.Image, data []byte, rep *engine.Report) {
	defer func() {
		if err := img.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if _, err := img.ReadAt(make([]byte, 1), 0); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("read after close: %v, want ErrClosed", err)
		}
	}()
	ft := img.Footer()
	size := img.Size()
	if size != int64(ft.CurrentSize) || size < 0 || size%engine.SectorSize != 0 {
		t.Fatalf("size %d, footer says %d", size, ft.CurrentSize)
	}
	if rep.Size != size || rep.Type != ft.DiskType.String() {
		t.Fatalf("Check says %s of %d bytes, open says %s of %d", rep.Type, rep.Size, ft.DiskType, size)
	}
	raw := ft.Marshal()
	if _, err := engine.ParseFooter(raw[:], 0); err != nil {
		t.Fatalf("footer of an open image does not re-parse: %v", err)
	}
	h := img.Header()
	if (h == nil) != (img.Type() == engine.TypeFixed) || (h == nil) != (img.BlockSize() == 0) {
		t.Fatalf("%s image: header %v, block size %d", img.Type(), h, img.BlockSize())
	}
	if h != nil {
		hraw := h.Marshal()
		if _, err := engine.ParseDynamicHeader(hraw[:], 512); err != nil {
			t.Fatalf("header of an open image does not re-parse: %v", err)
		}
	}
	if img.Type() == engine.TypeDifferencing {
		if _, err := img.ReadAt(make([]byte, 1), 0); err != nil && !errors.Is(err, engine.ErrNoParent) {
			t.Fatalf("read of a differencing image without parent: %v", err)
		}
		img.SetParent(patternDisk{size})
	}
	ref := newRefReader(img, data)
	alloc := img.AllocatedBytes()
	if h == nil && alloc != size || h != nil && alloc != rep.Blocks*img.BlockSize() {
		t.Fatalf("AllocatedBytes %d; size %d, Check counts %d blocks of %d", alloc, size, rep.Blocks, img.BlockSize())
	}
	if _, err := img.WriteAt(make([]byte, 512), 0); !errors.Is(err, engine.ErrReadOnly) {
		t.Fatalf("write to a read-only image: %v", err)
	}

	exts, err := img.Extents(0, size)
	if err != nil {
		t.Fatalf("extents of the whole disk: %v", err)
	}
	checkExtents(t, exts, 0, size)
	budget := int64(readBudget)
	buf, want := make([]byte, chunk), make([]byte, chunk)
	for _, e := range exts {
		// Read the start of each extent and its last chunk, within budget.
		for _, r := range [][2]int64{{e.Off, min(e.Len, budget)}, {e.Off + max(e.Len-chunk, 0), min(e.Len, chunk)}} {
			for off, end := r[0], r[0]+r[1]; off < end && budget > 0; {
				n := min(end-off, chunk, budget)
				if _, err := img.ReadAt(buf[:n], off); err != nil {
					t.Fatalf("read %d at %#x: %v", n, off, err)
				}
				ref.Read(want[:n], off)
				if !bytes.Equal(buf[:n], want[:n]) {
					t.Fatalf("read %d at %#x differs from the bytes' decoding", n, off)
				}
				if rep.OK() && e.State != engine.ExtentData {
					clear(want[:n])
					if e.State == engine.ExtentHole {
						ref.FillAbsent(want[:n], off)
					}
					if !bytes.Equal(buf[:n], want[:n]) {
						t.Fatalf("%s extent at %#x does not read as one", e.State, off)
					}
				}
				off += n
				budget -= n
			}
		}
	}
	if size > 0 {
		if n, err := img.ReadAt(buf[:2], size-1); n != 1 || err != io.EOF {
			t.Fatalf("read across the end: %d, %v; want 1, EOF", n, err)
		}
	}
	if _, err := img.ReadAt(buf[:1], size); err != io.EOF {
		t.Fatalf("read at the end: %v, want EOF", err)
	}
}

// checkExtents checks that exts cover [off, off+n) exactly, in order,
// with adjacent extents of one state merged.
func checkExtents(t *testing.T, exts []engine.Extent, off, n int64) {
	t.Helper()
	pos := off
	for i, e := range exts {
		if e.Off != pos || e.Len <= 0 || e.State > engine.ExtentHole {
			t.Fatalf("extent %d is %+v, want one at %#x", i, e, pos)
		}
		if i > 0 && exts[i-1].State == e.State {
			t.Fatalf("extents %d and %d are both %s", i-1, i, e.State)
		}
		pos += e.Len
	}
	if pos != off+n {
		t.Fatalf("extents end at %#x, want %#x", pos, off+n)
	}
}

// newRefReader is the independent decoding of data that reads are
// checked against (vhdgen.SectorReader), with the layout img declares.
func newRefReader(img *engine.Image, data []byte) *vhdgen.SectorReader {
	r := &vhdgen.SectorReader{Data: data, Fixed: img.Type() == engine.TypeFixed}
	if h := img.Header(); h != nil {
		r.BlockSize, r.TableOffset = int64(h.BlockSize), int64(h.TableOffset)
	}
	if img.Type() == engine.TypeDifferencing {
		r.Absent = patternByte
	}
	return r
}
