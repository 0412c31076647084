package engine

import "errors"

// ZeroIsFast implements FastZeroer. A zero writes no data when holes may
// be made (ZeroMayDeallocate) and:
//
//   - fixed image: the range is whole sectors, which are punched out of
//     the host file (a partial sector is read, patched and written);
//   - dynamic or differencing image: every whole block in the range can
//     be freed and every partial one is unallocated with nothing below it
//     to hide, so the zeros written there are dropped. A differencing
//     image asks its parent view (SetParent) whether anything below holds
//     data, as Zero itself does.
//
// It mirrors Zero (edges, sparse.zero, writeBlock); a change there must
// be made here too.
func (img *Image) ZeroIsFast(off, n int64, mode ZeroMode) bool {
	if mode != ZeroMayDeallocate || img.writable(off, n) != nil {
		return false
	}
	end := off + n
	inStart, inEnd := alignUp(off, SectorSize), end/SectorSize*SectorSize
	if img.sparse == nil {
		return off == inStart && end == inEnd
	}
	s := img.sparse
	if s.usable() != nil {
		return false
	}
	if n == 0 {
		return true
	}
	if inStart >= inEnd { // within one sector or across two, none whole
		return s.dropsZeros(off/SectorSize*SectorSize) && s.dropsZeros((end-1)/SectorSize*SectorSize)
	}
	if off < inStart && !s.dropsZeros(inStart-SectorSize) {
		return false
	}
	if end > inEnd && !s.dropsZeros(inEnd) {
		return false
	}
	return s.zeroWritesNothing(inStart, inEnd-inStart)
}

var errWritesData = errors.New("zero writes data")

// zeroWritesNothing reports whether zero(off, n, ZeroMayDeallocate)
// (whole sectors) would only change metadata.
func (s *sparse) zeroWritesNothing(off, n int64) bool {
	err := s.forBlocks(off, n, func(b, in, l int64) error {
		whole := in == 0 && l == s.sectorsIn(b)*SectorSize
		if (whole || s.entry(b) == batUnused) && s.absentReadsZero(b<<s.blockShift+in, l) {
			return nil
		}
		return errWritesData
	})
	return err == nil
}

// dropsZeros reports whether zeros written to the sector at off are
// dropped: its block is unallocated and nothing below shows through.
func (s *sparse) dropsZeros(off int64) bool {
	return s.entry(off>>s.blockShift) == batUnused && s.absentReadsZero(off, SectorSize)
}
