package engine

import (
	"errors"
	"io"
)

// Stray data: bytes the file holds under a clear bitmap bit. A flush
// writes a bit only after syncing its sector's data, so every write a
// flush acknowledged has its bit on disk; data under a clear bit is a
// write that never reached a flush (the process died, the power failed)
// or a torn one. Reads treat it as absent (sparse.readAt), so the image
// has one view; Check reports it, because readers that ignore bitmaps
// (qemu-img, for dynamic images) would still see it, and Repair zeroes
// it so that they agree.
//
// The scan reads each allocated block's bitmap, skips full blocks, and
// reads only the sectors under clear bits that the file actually holds:
// where the file can report holes (SEEK_DATA), holes are skipped, and
// the engine leaves the unwritten part of a block a hole. Its cost is a
// bitmap read per allocated block plus the data under clear bits, and
// never more than the file's size. The bitmap reads are what a cold
// cache pays for (a seek each), so they are made many at a time
// (stray_bitmaps.go).

// strayScan walks the blocks of s as the file f holds them.
type strayScan struct {
	s    *sparse
	f    File
	bits []byte // the current block's bitmap
	buf  []byte // up to strayWindow bytes of data
}

// strayWindow bounds each read of data, and so the scan's memory.
const strayWindow = 1 << 20

// strayRuns calls fn for each run of sectors that hold data under clear
// bits, block by block in file order, with the block, the run's file
// offset and its length. fn returning errStopScan ends the scan without
// an error.
func (s *sparse) strayRuns(f File, fn func(b, off, n int64) error) error {
	sc := &strayScan{s: s, f: f}
	blocks := s.blocksInFileOrder()
	batch := bitmapBatch(s.bitmapSize)
	bits := make([]byte, int64(min(batch, len(blocks)))*s.bitmapSize)
	for len(blocks) > 0 {
		n := min(batch, len(blocks))
		if err := s.readBitmaps(f, blocks[:n], bits); err != nil {
			return err
		}
		for i, b := range blocks[:n] {
			sc.bits = bits[int64(i)*s.bitmapSize:][:s.bitmapSize]
			err := sc.block(int64(b), fn)
			if errors.Is(err, errStopScan) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		blocks = blocks[n:]
	}
	return nil
}

var errStopScan = errors.New("stop the scan")

// block scans allocated block b, whose bitmap is in sc.bits.
func (sc *strayScan) block(b int64, fn func(b, off, n int64) error) error {
	s := sc.s
	e := s.entry(b)
	secs := s.sectorsIn(b)
	if allSet(sc.bits, secs) {
		return nil
	}
	start := s.dataOff(e)
	return fileData(sc.f, start, start+secs*SectorSize, func(from, to int64) error {
		return sc.window(b, start, from, to, fn)
	})
}

// window checks the clear sectors of block b (data at start) that lie in
// the file's data region [from, to), strayWindow bytes at a time.
func (sc *strayScan) window(b, start, from, to int64, fn func(b, off, n int64) error) error {
	from = start + (from-start)/SectorSize*SectorSize
	for from < to {
		end := min(to, from+strayWindow)
		end = start + (end-start+SectorSize-1)/SectorSize*SectorSize
		next := end
		// Read only from the first clear sector to the last.
		lo, hi := (from-start)/SectorSize, (end-start)/SectorSize
		lo = runEnd(sc.bits, lo, hi, true)
		for hi > lo && bitSet(sc.bits, hi-1) {
			hi--
		}
		if lo == hi {
			from = next
			continue
		}
		from, end = start+lo*SectorSize, start+hi*SectorSize
		if sc.buf == nil {
			sc.buf = make([]byte, strayWindow+SectorSize)
		}
		buf := sc.buf[:end-from]
		if _, err := sc.f.ReadAt(buf, from); err != nil && !errors.Is(err, io.EOF) {
			return ioError("read block", from, err)
		}
		if err := sc.report(b, lo, hi, from, buf, fn); err != nil {
			return err
		}
		from = next
	}
	return nil
}

// report calls fn for each run of non-zero sectors under clear bits among
// sectors [lo, hi) of block b, read into buf from file offset at.
func (sc *strayScan) report(b, lo, hi, at int64, buf []byte, fn func(b, off, n int64) error) error {
	runStart := int64(-1)
	flush := func(sec int64) error {
		if runStart < 0 {
			return nil
		}
		off := at + (runStart-lo)*SectorSize
		err := fn(b, off, (sec-runStart)*SectorSize)
		runStart = -1
		return err
	}
	for sec := lo; sec < hi; sec++ {
		p := buf[(sec-lo)*SectorSize : (sec-lo+1)*SectorSize]
		if !bitSet(sc.bits, sec) && !isZero(p) {
			if runStart < 0 {
				runStart = sec
			}
			continue
		}
		if err := flush(sec); err != nil {
			return err
		}
	}
	return flush(hi)
}

// fileData calls fn for each part of [from, to) that the file holds:
// the regions between holes where f can report them (SEEK_DATA), or all
// of it.
func fileData(f File, from, to int64, fn func(from, to int64) error) error {
	ds, ok := f.(dataSeeker)
	if !ok {
		return fn(from, to)
	}
	for pos := from; pos < to; {
		start, end, err := ds.NextData(pos)
		if errors.Is(err, io.EOF) || err == nil && start >= to {
			return nil
		}
		if err != nil {
			return fn(pos, to) // cannot tell: read it all
		}
		start, end = max(start, pos), min(end, to)
		if err := fn(start, end); err != nil {
			return err
		}
		pos = end
	}
	return nil
}
