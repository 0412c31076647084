package engine

import "fmt"

// Sizes of the files Convert (and a flatten) writes, computed without
// writing them (`vhd measure`).

// FixedFileSize is the length of a fixed VHD of a disk of size bytes: the
// size rounded up to a whole sector, then the footer.
func FixedFileSize(size int64) int64 {
	return alignUp(size, SectorSize) + FooterSize
}

// DynamicFileSize is the length of a new dynamic VHD of a disk of size
// bytes with blockSize blocks (DefaultBlockSize if 0), once blocks of them
// are allocated: the layout writeSparse makes, then each block placed as
// allocate places it (bitmap, data aligned to dataAlignment, footer
// after). Alignment gaps are holes in the file: they count in the length,
// not in the space the file takes.
func DynamicFileSize(size, blockSize, blocks int64) (int64, error) {
	if blockSize == 0 {
		blockSize = DefaultBlockSize
	}
	if blockSize < MinBlockSize || blockSize > MaxBlockSize || blockSize&(blockSize-1) != 0 {
		return 0, fmt.Errorf("vhd: block size %d is not a power of two between 512 bytes and 256 MiB", blockSize)
	}
	size = alignUp(size, SectorSize)
	entries := (size + blockSize - 1) / blockSize
	if blocks < 0 || blocks > entries {
		return 0, fmt.Errorf("vhd: %d blocks asked of a disk of %d", blocks, entries)
	}
	s := &sparse{size: size, blockSize: blockSize, bitmapSize: bitmapBytes(uint32(blockSize))}
	for int64(1)<<s.blockShift < s.blockSize {
		s.blockShift++
	}
	s.reservedEnd = FooterSize + HeaderSize + batBytes(uint32(entries))
	end := s.reservedEnd // where the footer sits
	a := s.dataAlignment()
	for range blocks {
		// As allocate: after the footer, the bitmap, then the data
		// aligned; the footer moves past the data. (A loop, not a
		// stride: with blocks smaller than the alignment the gaps vary.)
		end = alignUp(end+FooterSize+s.bitmapSize, a) + blockSize
	}
	return end + FooterSize, nil
}
