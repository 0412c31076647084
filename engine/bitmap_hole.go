package engine

import (
	"cmp"
	"errors"
	"io"
	"math"
	"slices"
)

// A download or copy that set the file's full length first and did not
// finish leaves the rest of the file a hole: the block table and the
// footer copy came through, the blocks and the footer at the end did
// not, and every block past the cut reads as never written. A bitmap
// sector the file holds as a hole (SEEK_DATA) was never written there.
// But vhd itself leaves such bitmaps too: it allocates a block by
// growing the file over it and writes the bitmap at a flush, so a
// flush or a kill can leave an allocated block whose bitmap is still a
// hole, holding nothing. The two are told apart by the footer at the
// end: vhd writes it before it grows the file, the cut copy lost it. So
// only where the footer copy stands in does check warn (bitmap-hole)
// and a salvage list such blocks as lost.

// bitmapHoles calls fn, in file order, for each allocated block whose
// bitmap lies in a hole of f, when cut says the file lost its footer at
// the end (above); nothing where f cannot tell holes. It asks f once
// per data region it passes, not once per block.
func (s *sparse) bitmapHoles(f File, cut bool, fn func(b, off int64) bool) {
	ds, ok := f.(dataSeeker)
	if !ok || !cut {
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
