package engine

import (
	"encoding/binary"
	"slices"
)

// The block allocation table: one big-endian u32 per block, the sector
// number of the block's bitmap, or batUnused. The table is padded to a
// whole sector. A block in the file is its sector bitmap (one bit per
// sector, MSB first, padded to a sector) followed by its data:
//
//	BAT[i]*512 -> +--------------+ bitmapBytes(block size)
//	              | bitmap       |
//	              +--------------+ block size
//	              | data         |
//	              +--------------+
const batUnused = 0xFFFFFFFF

// ParseBAT decodes n entries from b (which holds at least 4n bytes).
func ParseBAT(b []byte, n int) []uint32 {
	bat := make([]uint32, n)
	decodeBAT(bat, b)
	return bat
}

func decodeBAT(dst []uint32, b []byte) {
	for i := range dst {
		dst[i] = binary.BigEndian.Uint32(b[4*i:])
	}
}

// span is a byte range of the file.
type span struct {
	off, len int64
	what     string
}

func (s span) end() int64 { return s.off + s.len }

func (s span) overlaps(o span) bool { return s.off < o.end() && o.off < s.end() }

// batProblems checks every allocated entry of bat: its block must lie
// inside the file's data area (before the footer at end), clear of the
// reserved structures, and clear of every other block. It returns at
// most max problems, each a *CorruptError naming the entry. The work is
// one sort of the allocated entries, O(n log n) in their number.
func batProblems(bat []uint32, tableOff int64, blockLen int64, dataEnd int64, reserved []span, max int) []error {
	var errs []error
	add := func(err error) bool {
		errs = append(errs, err)
		return len(errs) < max
	}
	type ent struct {
		idx uint32
		off int64
	}
	var used []ent
	for i, e := range bat {
		if e == batUnused {
			continue
		}
		off := int64(e) * SectorSize
		at := tableOff + 4*int64(i)
		if off+blockLen > dataEnd {
			if !add(batCorrupt(CodeBATOutOfRange, at, "block %d at %#x+%#x runs past the data area, which ends at %#x", i, off, blockLen, dataEnd)) {
				return errs
			}
			continue
		}
		blk := span{off: off, len: blockLen}
		for _, r := range reserved {
			if blk.overlaps(r) {
				if !add(batCorrupt(CodeBATOverlap, at, "block %d at %#x overlaps the %s at %#x", i, off, r.what, r.off)) {
					return errs
				}
			}
		}
		used = append(used, ent{uint32(i), off})
	}
	slices.SortFunc(used, func(a, b ent) int {
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})
	for k := 1; k < len(used); k++ {
		prev, cur := used[k-1], used[k]
		if cur.off < prev.off+blockLen {
			at := tableOff + 4*int64(cur.idx)
			if !add(batCorrupt(CodeBATOverlap, at, "block %d at %#x overlaps block %d at %#x", cur.idx, cur.off, prev.idx, prev.off)) {
				return errs
			}
		}
	}
	return errs
}

// batCorrupt is damage to the BAT entry at off, under code.
func batCorrupt(code string, off int64, format string, args ...any) error {
	err := corrupt("BAT", "entry", off, format, args...).(*CorruptError)
	err.Code = code
	return err
}
