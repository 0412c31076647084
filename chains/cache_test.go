package chains

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"vhdkit/engine"
)

// alternatingChild makes an empty dynamic base of size and a child over
// it that holds every other sector: each 2 MiB chunk of the chain is
// then 4096 runs of owners, the worst case for the read cache. The child
// is made cheaply: one sector written per block, then each block's
// sector bitmap set to 0xAA in the file (the sectors it adds hold zeros,
// present).
func alternatingChild(tb testing.TB, dir string, size int64) string {
	tb.Helper()
	base := filepath.Join(dir, "base.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		tb.Fatal(err)
	}
	img.Close()
	child := filepath.Join(dir, "child.vhd")
	c, err := CreateChild(base, child, CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	top, sector := c.Top(), bytes.Repeat([]byte{0xcc}, 512)
	for off := int64(0); off < size; off += top.BlockSize() {
		if _, err := top.WriteAt(sector, off); err != nil {
			tb.Fatal(err)
		}
	}
	h := *top.Header()
	if err := c.Close(); err != nil {
		tb.Fatal(err)
	}
	f, err := os.OpenFile(child, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	bat := make([]byte, 4*int64(h.MaxTableEntries))
	if _, err := f.ReadAt(bat, int64(h.TableOffset)); err != nil {
		tb.Fatal(err)
	}
	bitmap := bytes.Repeat([]byte{0xaa}, int(h.BlockSize/512/8))
	for i := 0; i < len(bat); i += 4 {
		if e := binary.BigEndian.Uint32(bat[i:]); e != 0xffffffff {
			if _, err := f.WriteAt(bitmap, int64(e)*512); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return child
}

// heapAfterReads opens the chain, reads one sector of every chunk (which
// builds the chunk's cache entry), and returns the live heap the open
// chain then holds, after a GC.
func heapAfterReads(tb testing.TB, path string, opts Options) (int64, *Chain) {
	tb.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c, err := Open(path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 512)
	for off := int64(0); off < c.Size(); off += 2 << 20 {
		if _, err := c.ReadAt(buf, off+512); err != nil {
			tb.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc), c
}

// TestReadCacheHeapBounded: a 4 GiB chain whose child holds every other
// sector, read chunk by chunk with the default options, holds at most
// the documented bound (64 MiB) plus the images' own tables. Before the
// bound, the cache grew with the disk: 192 MiB here (and ~14 GB at the
// format's largest size).
func TestReadCacheHeapBounded(t *testing.T) {
	const size, bound = 4 << 30, 64 << 20
	child := alternatingChild(t, t.TempDir(), size)
	heap, c := heapAfterReads(t, child, Options{ReadOnly: true})
	buf := make([]byte, 1024)
	if _, err := c.ReadAt(buf, size-1024); err != nil || buf[0] != 0 || buf[512] != 0 {
		t.Fatalf("read through the chain: %v % x", err, buf[:4])
	}
	c.Close()
	t.Logf("4 GiB of alternating sectors: %.1f MiB of heap", float64(heap)/(1<<20))
	if heap > bound+bound/8 {
		t.Errorf("the open chain holds %.1f MiB of heap after reading every chunk, want at most the 64 MiB bound", float64(heap)/(1<<20))
	}
	// Without the bitmap check, which would read 4 GiB of sectors (40 s).
	if rep, err := engine.CheckPath(child, engine.CheckOptions{}); err != nil || !rep.OK() {
		t.Fatalf("check %s: %v %+v", child, err, rep)
	}
}
