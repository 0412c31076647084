package engine

// FileOffset says where in the image file the disk's byte off is stored:
// for a fixed image the same offset, for a dynamic or differencing image
// inside its block's data. ok is false where the image holds no block
// (the offset is then not meaningful) or off is outside the disk. It is
// what `vhd map` reports as an extent's offset; a sector of an allocated
// block whose bitmap bit is clear still has a place, which is not read.
func (img *Image) FileOffset(off int64) (pos int64, ok bool) {
	if off < 0 || off >= img.Size() {
		return 0, false
	}
	s := img.sparse
	if s == nil {
		return off, true
	}
	e := s.entry(off >> s.blockShift)
	if e == batUnused {
		return 0, false
	}
	return s.dataOff(e) + off&(s.blockSize-1), true
}
