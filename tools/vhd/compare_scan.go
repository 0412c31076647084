package main

import (
	"bytes"
	"context"
	"errors"
	"io"

	"vhdkit/engine"
)

// scanWindow bounds each Extents call of a comparison, so the lists stay
// small (at most scanWindow/512 extents) however large the disks.
const scanWindow = 256 << 20

// scanChunk is how much of a data extent is read at once.
const scanChunk = 4 << 20

// differ finds the first sector where two disks' contents differ. It
// reads by extents: runs both disks know to read as zeros (holes, zero
// extents) are not read at all, and a run only one of them stores is
// checked for zeros in the other.
type differ struct {
	a, b     engine.Disk
	bufA     []byte
	bufB     []byte
	progress func(done, total int64)
	done     int64 // bytes of the comparison walked, for progress
	total    int64
}

func newDiffer(a, b engine.Disk, progress func(done, total int64)) *differ {
	return &differ{a: a, b: b, bufA: make([]byte, scanChunk), bufB: make([]byte, scanChunk), progress: progress}
}

// firstDiff returns the offset of the first 512-byte sector of [0, n)
// that differs between the disks, or -1 if none does.
func (d *differ) firstDiff(ctx context.Context, n int64) (int64, error) {
	for w := int64(0); w < n; w += scanWindow {
		l := min(scanWindow, n-w)
		ea, err := d.a.Extents(w, l)
		if err != nil {
			return 0, err
		}
		eb, err := d.b.Extents(w, l)
		if err != nil {
			return 0, err
		}
		if at, err := d.walkPair(ctx, ea, eb); at >= 0 || err != nil {
			return at, err
		}
	}
	return -1, nil
}

// walkPair compares the runs where the two extent lists (covering the same
// range) overlap.
func (d *differ) walkPair(ctx context.Context, ea, eb []engine.Extent) (int64, error) {
	for len(ea) > 0 && len(eb) > 0 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		x, y := ea[0], eb[0]
		off := max(x.Off, y.Off)
		end := min(x.Off+x.Len, y.Off+y.Len)
		at, err := d.segment(off, end-off, x.State == engine.ExtentData, y.State == engine.ExtentData)
		if at >= 0 || err != nil {
			return at, err
		}
		d.step(end - off)
		if x.Off+x.Len == end {
			ea = ea[1:]
		}
		if y.Off+y.Len == end {
			eb = eb[1:]
		}
	}
	return -1, nil
}

// segment compares one run: a disk that does not store it (dataA or
// dataB false) reads zeros there. (Disks are opened through chains, so
// a hole is never a parent's data.)
func (d *differ) segment(off, n int64, dataA, dataB bool) (int64, error) {
	switch {
	case dataA && dataB:
		return d.compareData(off, n)
	case dataA:
		return firstNonZero(d.a, d.bufA, off, n)
	case dataB:
		return firstNonZero(d.b, d.bufB, off, n)
	}
	return -1, nil
}

func (d *differ) compareData(off, n int64) (int64, error) {
	for end := off + n; off < end; {
		l := min(end-off, scanChunk)
		if err := readFull(d.a, d.bufA[:l], off); err != nil {
			return 0, err
		}
		if err := readFull(d.b, d.bufB[:l], off); err != nil {
			return 0, err
		}
		if i := firstDifferentByte(d.bufA[:l], d.bufB[:l]); i >= 0 {
			return sectorOf(off + int64(i)), nil
		}
		off += l
	}
	return -1, nil
}

// firstNonZero returns the first sector of [off, off+n) of disk that
// holds a byte other than zero, or -1.
func firstNonZero(disk engine.Disk, buf []byte, off, n int64) (int64, error) {
	for end := off + n; off < end; {
		l := min(end-off, int64(len(buf)))
		if err := readFull(disk, buf[:l], off); err != nil {
			return 0, err
		}
		for i, c := range buf[:l] {
			if c != 0 {
				return sectorOf(off + int64(i)), nil
			}
		}
		off += l
	}
	return -1, nil
}

func (d *differ) step(n int64) {
	d.done += n
	if d.progress != nil {
		d.progress(d.done, d.total)
	}
}

// sectorOf is the start of the sector holding off: qemu-img compare
// reports mismatches by sector.
func sectorOf(off int64) int64 { return off &^ (engine.SectorSize - 1) }

// firstDifferentByte is the index of the first byte where a and b (of one
// length) differ, or -1.
func firstDifferentByte(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func readFull(d engine.Disk, p []byte, off int64) error {
	_, err := d.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
