package engine

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// sparseTableImage writes a dynamic image of size bytes in blocks of bs
// whose table the file does not hold: footer copy, header, then a hole
// where the table should be, then the footer. A few KiB on disk, however
// many entries the header claims.
func sparseTableImage(t *testing.T, path string, size, bs int64) {
	t.Helper()
	ft := newFooter(CreateOptions{Type: TypeDynamic, Size: size})
	n := uint32((size + bs - 1) / bs)
	h := DynamicHeader{DataOffset: ^uint64(0), TableOffset: FooterSize + HeaderSize, Version: formatVersion, MaxTableEntries: n, BlockSize: uint32(bs)}
	end := int64(h.TableOffset) + batBytes(n)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fraw, hraw := ft.Marshal(), h.Marshal()
	for _, w := range []struct {
		off  int64
		data []byte
	}{{0, fraw[:]}, {FooterSize, hraw[:]}, {end, fraw[:]}} {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			t.Fatal(err)
		}
	}
}

// allocated runs fn and returns the bytes it allocated and how long it
// took.
func allocated(fn func()) (uint64, time.Duration) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	fn()
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, took
}

// TestSparseTableRefusedFast: a file of a few KiB claiming a legal table
// of 134M entries (2040 GiB in 16 KiB blocks) is refused by Open, Check
// and Repair at the first hole in the table, in well under a second and
// with a few MiB, not after reading 534 MB of holes into as much memory.
func TestSparseTableRefusedFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse-table.vhd")
	sparseTableImage(t, path, MaxSize, 16<<10)
	const maxAlloc, maxTime = 4 << 20, time.Second
	var err error
	mem, took := allocated(func() { _, err = Open(path, Options{ReadOnly: true}) })
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("open: %v; want an error matching ErrCorrupt", err)
	}
	t.Logf("open: %s, %d bytes allocated", took, mem)
	if mem > maxAlloc || took > maxTime {
		t.Errorf("open took %s and allocated %d bytes; want under %s and %d", took, mem, maxTime, maxAlloc)
	}
	var rep *Report
	mem, took = allocated(func() { rep, err = CheckPath(path, CheckOptions{}) })
	if err != nil || rep.OK() || rep.Problems[0].Code != CodeBATOverlap || !rep.Problems[0].Fatal {
		t.Errorf("check: %v, %v; want a fatal %s", rep, err, CodeBATOverlap)
	}
	t.Logf("check: %s, %d bytes allocated", took, mem)
	if mem > maxAlloc || took > maxTime {
		t.Errorf("check took %s and allocated %d bytes; want under %s and %d", took, mem, maxTime, maxAlloc)
	}
	mem, took = allocated(func() { _, err = Repair(path, RepairOptions{}) })
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("repair: %v; want a refusal matching ErrCorrupt", err)
	}
	t.Logf("repair: %s, %d bytes allocated", took, mem)
	if mem > maxAlloc || took > maxTime {
		t.Errorf("repair took %s and allocated %d bytes; want under %s and %d", took, mem, maxTime, maxAlloc)
	}
}

// TestLargeEmptyTableOpens: a legal table the file holds, all entries
// unallocated (2040 GiB in 512 KiB blocks: 4M entries, 16 MiB), opens,
// reads as zeros, and costs about the table's size in memory, allocated
// once; likewise read from a File that cannot tell holes, where the
// table grows as it is read.
func TestLargeEmptyTableOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: MaxSize, BlockSize: 512 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	table := batBytes(uint32(MaxSize / (512 << 10)))
	for _, holes := range []bool{true, false} {
		var mem uint64
		mem, _ = allocated(func() {
			f, ferr := os.Open(path)
			if ferr != nil {
				t.Fatal(ferr)
			}
			var file File = OSFile(f)
			if !holes {
				file = noSeekFile{file}
			}
			img, err = OpenFile(file, path, Options{ReadOnly: true})
		})
		if err != nil {
			t.Fatal(err)
		}
		limit := uint64(table) + 3<<20 // the table, a read buffer, the rest
		if !holes {
			limit = 2*uint64(table) + 3<<20 // grown by doubling
		}
		t.Logf("SEEK_DATA %v: open allocated %d bytes for a table of %d", holes, mem, table)
		if mem > limit {
			t.Errorf("SEEK_DATA %v: open allocated %d bytes for a table of %d; want at most %d", holes, mem, table, limit)
		}
		buf := make([]byte, 1<<20)
		if _, err := img.ReadAt(buf, MaxSize-int64(len(buf))); err != nil || !isZero(buf) {
			t.Errorf("read: %v", err)
		}
		img.Close()
	}
	checkClean(t, path)
}

// noSeekFile hides a File's SEEK_DATA.
type noSeekFile struct{ File }
