package engine

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
)

// Reading many bitmaps for the stray-data scan. On a cold cache each
// bitmap read is a seek, and one at a time they made `vhd check` of an
// image with 65536 allocated blocks take 16 s on a virtual disk; disks
// and virtual disks serve many reads at once, so a batch of bitmaps is
// read by several goroutines, in file order.

const (
	// strayReaders is how many bitmap reads are in flight at once.
	strayReaders = 32
	// strayBatchBytes bounds the bitmaps held at once.
	strayBatchBytes = 1 << 20
)

// bitmapBatch is how many bitmaps of bitmapSize bytes a batch holds:
// up to strayBatchBytes of them, at least one, at most 1024.
func bitmapBatch(bitmapSize int64) int {
	return int(max(1, min(1024, strayBatchBytes/bitmapSize)))
}

// blocksInFileOrder lists the allocated blocks by where they lie in the
// file.
func (s *sparse) blocksInFileOrder() []uint32 {
	var list []uint32
	for b := range s.bat {
		if s.entry(int64(b)) != batUnused {
			list = append(list, uint32(b))
		}
	}
	slices.SortFunc(list, func(a, b uint32) int { return cmp.Compare(s.entry(int64(a)), s.entry(int64(b))) })
	return list
}

// readBitmaps reads the bitmaps of blocks into bits, one after another,
// strayReaders at a time.
func (s *sparse) readBitmaps(f File, blocks []uint32, bits []byte) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, min(strayReaders, len(blocks)))
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(len(blocks)) && errs[w] == nil; i = next.Add(1) - 1 {
				off := int64(s.entry(int64(blocks[i]))) * SectorSize
				if _, err := f.ReadAt(bits[i*s.bitmapSize:][:s.bitmapSize], off); err != nil {
					errs[w] = ioError("read bitmap", off, err)
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
