package engine

// Where new blocks' data goes in the file.
//
// Data aligned to a page (dataAlign) is the least: guests' 4 KiB I/O then
// lands on host pages. More helps reads: Linux keeps a file's page cache
// in large folios only where the file offset is aligned to the folio's
// size, and a block whose data starts on an odd page is cached in small
// folios that cost more to look up and copy from. Reads of a dynamic
// image against the same reads of a raw file, CPU time, on ext4
// (docs/BENCHMARKS.md; a busy machine, then an idle one):
//
//	data alignment             4 KiB   256 KiB   1 MiB
//	1 MiB sequential, busy     0.72    0.85      0.99
//	4 KiB random, busy         0.84    0.90      0.93
//	1 MiB sequential, idle             0.75      0.90
//	4 KiB random, idle                 0.87      0.91
//
// The reference notes name 1 MiB as the alignment that matters, and only
// it reaches the 0.9 the engine is held to, so new blocks' data is
// aligned to 1 MiB. The space skipped to align a block is a hole in the
// file: it costs no disk space, only apparent size (ls -l, copies by
// tools that do not keep holes): up to half the block size per block,
// so the alignment is capped at half the block size, and lowered for
// disks so big that, fully allocated, their blocks would run past the
// 2 TiB a BAT entry can address (2040 GiB disks keep 4 KiB). vhd info
// reports the space the image really holds.
const maxDataAlign = 1 << 20

// dataAlignment is the file alignment for new blocks' data.
func (s *sparse) dataAlignment() int64 {
	a := int64(maxDataAlign)
	for a > dataAlign && (a > s.blockSize/2 || !s.fitsAligned(a)) {
		a /= 2
	}
	return a
}

// fitsAligned reports whether every block of the disk, each allocated at
// alignment a after the structures that come first, keeps its bitmap at
// a sector number a BAT entry can hold.
func (s *sparse) fitsAligned(a int64) bool {
	stride := s.bitmapSize + s.blockSize + FooterSize + a // at most, per block
	return s.reservedEnd+s.blocks()*stride < int64(batUnused)*SectorSize
}
