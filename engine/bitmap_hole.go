package engine

import (
	"cmp"
	"errors"
	"io"
	"math"
	"slices"
)

// A writer always writes a block's bitmap when it allocates the block,
// so a bitmap sector the file holds as a hole (SEEK_DATA) was never
// written to this file. That is what a download or copy leaves that set
// the file's full length first and did not finish: the block table and
// the footer copy came through, the blocks did not, and every block
// past the cut reads as never written. Nothing in the format tells that
// apart from a block that held nothing, so check warns (bitmap-hole)
// and a salvage lists such blocks as lost.

// bitmapHoles calls fn, in file order, for each allocated block whose
// bitmap lies in a hole of f; nothing where f cannot tell holes. It asks
// f once per data region it passes, not once per block.
func (s *sparse) bitmapHoles(f File, fn func(b, off int64) bool) {
	ds, ok := f.(dataSeeker)
	if !ok {
		return
	}
	type placed struct{ b, off int64 }
	var list []placed
	for b := range s.bat {
		if e := s.entry(int64(b)); e != batUnused {
			list = append(list, placed{int64(b), int64(e) * SectorSize})
		}
	}
	slices.SortFunc(list, func(x, y placed) int { return cmp.Compare(x.off, y.off) })
	dataStart, dataEnd := int64(-1), int64(-1)
	for _, p := range list {
		if p.off >= dataEnd {
			start, end, err := ds.NextData(p.off)
			switch {
			case errors.Is(err, io.EOF):
				start, end = math.MaxInt64, math.MaxInt64
			case err != nil:
				return // cannot tell
			}
			dataStart, dataEnd = start, end
		}
		if p.off < dataStart && !fn(p.b, p.off) {
			return
		}
	}
}
