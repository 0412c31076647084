package engine

import (
	"encoding/binary"
	"slices"
)

// Reading the BAT so that memory follows what the file holds. The table's
// length comes from the header and is checked against the file's size,
// but a file's size says nothing of what it holds: a sparse file of 8 KiB
// on disk can claim a legal table of 134M entries (a 2040 GiB disk of
// 16 KiB blocks), and reading it all took 5 s and 534 MB before saying
// anything. A hole reads as zeros, and an entry of zero puts its block
// over the footer copy at offset 0, which is never valid. So the table is
// read in chunks, each checked for zero entries as it is read, and the
// slice grows with the chunks read: a table the file does not hold is
// refused at its first hole, having cost at most twice the bytes read.
// Where the file can tell that it holds the whole table (SEEK_DATA), the
// slice is made whole at once, without the doubling.

// batChunk is how much of the table each read takes.
const batChunk = 1 << 20

// readBAT reads the n entries of the table at off in f. An entry of
// zero is damage, unless onZero is set (a salvage open): then it is
// told of each, which reads as unused.
func readBAT(f File, off, n int64, onZero func(i int64)) ([]uint32, error) {
	var bat []uint32
	if holdsAll(f, off, 4*n) {
		bat = make([]uint32, 0, n)
	}
	buf := make([]byte, min(4*n, batChunk))
	for i := int64(0); i < n; {
		c := min(n-i, batChunk/4)
		if _, err := f.ReadAt(buf[:4*c], off+4*i); err != nil {
			return nil, ioError("read BAT", off+4*i, err)
		}
		if len(bat)+int(c) > cap(bat) {
			bat = grow(bat, int(min(n, max(2*int64(cap(bat)), i+c))))
		}
		bat = bat[:i+c]
		if k := decodeNonZero(bat[i:], buf); k >= 0 {
			// A salvage takes a zero entry as a block lost, but a whole
			// chunk of them is a hole the file does not hold: read on,
			// and a sparse file claiming a huge table would fill memory.
			if onZero == nil || isZero(buf[:4*c]) {
				return nil, zeroEntry(off+4*(i+int64(k)), i+int64(k))
			}
			for j := i + int64(k); j < i+c; j++ {
				if bat[j] == 0 {
					bat[j] = batUnused
					onZero(j)
				}
			}
		}
		i += c
	}
	return bat, nil
}

// grow returns bat with room for n entries.
func grow(bat []uint32, n int) []uint32 {
	g := make([]uint32, len(bat), n)
	copy(g, bat)
	return g
}

// decodeNonZero decodes entries from b into dst, and returns the index of
// the first entry of zero, or -1. (The loop keeps the least entry rather
// than testing each: opening a 2040 GiB image decodes a million.)
func decodeNonZero(dst []uint32, b []byte) int {
	b = b[:4*len(dst)]
	least := uint32(batUnused)
	for i := range dst {
		v := binary.BigEndian.Uint32(b[4*i:])
		dst[i] = v
		least = min(least, v)
	}
	if least != 0 {
		return -1
	}
	return slices.Index(dst, 0)
}

// zeroEntry is the damage of entry i, at file offset off, being zero: a
// block over the footer copy, which is what a hole in the table reads as.
func zeroEntry(off, i int64) error {
	return batCorrupt(CodeBATOverlap, off, "block %d at 0x0 overlaps the footer copy at 0x0 (the table reads as zeros here: a hole in the file?)", i)
}

// holdsAll reports whether f is known to hold every byte of [off,
// off+n): no hole in it, where f can tell (SEEK_DATA).
func holdsAll(f File, off, n int64) bool {
	ds, ok := f.(dataSeeker)
	if !ok {
		return false
	}
	for pos := off; pos < off+n; {
		start, end, err := ds.NextData(pos)
		if err != nil || start > pos {
			return false // a hole (or no telling)
		}
		pos = end
	}
	return true
}
