package engine

import (
	"bytes"
	"errors"
	"sync/atomic"
)

func (s *sparse) writeAt(p []byte, off int64) error {
	if err := s.usable(); err != nil {
		return err
	}
	return s.forBlocks(off, int64(len(p)), func(b, in, l int64) error {
		buf := p[:l]
		p = p[l:]
		return s.writeBlock(b, in, buf, false)
	})
}

// usable refuses writes once a flush has failed.
func (s *sparse) usable() error {
	if e := s.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// writeBlock writes whole sectors p at in inside block b. Zeros written
// where a dynamic image holds nothing are dropped (zero-block elision)
// unless keep asks for the space to be allocated.
//
// Order: the data is written first and the bitmap bits set after, so a
// flush that collects a bit always finds its data already written, and
// syncs it before the bit reaches the disk (sparse_flush.go).
func (s *sparse) writeBlock(b, in int64, p []byte, keep bool) error {
	for {
		e := s.entry(b)
		if e == batUnused {
			if !keep && isZero(p) && s.absentReadsZero(b<<s.blockShift+in, int64(len(p))) {
				return nil
			}
			// A bit left set over an unallocated block (damage Check
			// reports) would make blktap trust the new, partial block.
			if s.batmapSet(b) {
				if err := s.batmapClear(b, b+1); err != nil {
					return err
				}
			}
			var err error
			if e, err = s.allocate(b); err != nil {
				return err
			}
		}
		_, err := s.f.WriteAt(p, s.dataOff(e)+in)
		// The flag is set once the data is in the file, not before: a
		// flush clears it before its sync, so a flush that cleared it
		// while this write was still on its way would sync without it,
		// and the next flush, finding the flag clear and (in a full
		// block) no bitmap to write, would return without any sync.
		s.dataDirty.Store(true)
		if err != nil {
			return ioError("write", s.dataOff(e)+in, err)
		}
		// A full block needs no bits, but only while it is still the
		// block written: a concurrent deallocation clears the BAT entry
		// before the full flag (deallocate), so a flag seen set with the
		// entry changed is stale, and the write, which may have gone to
		// the freed space, is done again (markPresent sees the change).
		// Checking the flag alone lost such writes.
		if s.isFull(b) && s.entry(b) == e {
			return nil
		}
		done, err := s.markPresent(b, e, in/SectorSize, (in+int64(len(p)))/SectorSize)
		if done || err != nil {
			return err
		}
		// The block was deallocated or moved while we wrote: write again.
	}
}

// markPresent sets bits [from, to) of block b, if b still sits at BAT
// entry e; done is false when it does not.
func (s *sparse) markPresent(b int64, e uint32, from, to int64) (done bool, err error) {
	mu := s.stripe(b)
	mu.Lock()
	if s.entry(b) != e {
		mu.Unlock()
		return false, nil
	}
	bm, err := s.loadBitmap(b, e)
	if err != nil {
		mu.Unlock()
		return false, err
	}
	tooMany := false
	if !allSetRange(bm.bits, from, to) {
		tooMany = s.markBitmapDirty(b, bm) // before the bits change
		s.setRange(b, bm, from, to, true)
		if allSet(bm.bits, s.sectorsIn(b)) {
			s.setFull(b, true)
		}
	}
	mu.Unlock()
	if tooMany {
		return true, s.flush()
	}
	return true, nil
}

func allSetRange(bits []byte, from, to int64) bool {
	for i := from; i < to; i++ {
		if !bitSet(bits, i) {
			return false
		}
	}
	return true
}

// allocate gives block b space at the end of the file (past every
// reserved span: a parent locator's data space may reach beyond the end
// of the file) and returns its BAT entry.
//
// Order: the footer is written at the new end of the file first, past
// the old footer, which stays where it was (in the gap before the new
// bitmap) and is never overwritten. So at every moment the file ends in
// a valid footer or, if power fails before the new one is durable, in
// zeros, and the copy at offset 0 stands in. The bitmap area is zeros
// (the file grew over it), so the block holds no sector until a flush
// writes its bitmap. The BAT entry changes only in memory here; it
// reaches the disk in a flush, after a sync that makes this footer and
// the block's space durable.
func (s *sparse) allocate(b int64) (uint32, error) {
	mu := s.stripe(b)
	mu.Lock()
	defer mu.Unlock()
	if e := s.entry(b); e != batUnused {
		return e, nil
	}
	s.allocMu.Lock()
	data := alignUp(max(s.footerOff+FooterSize, s.reservedEnd)+s.bitmapSize, s.dataAlignment())
	bitmapOff := data - s.bitmapSize
	newFooter := data + s.blockSize
	if bitmapOff/SectorSize >= batUnused {
		s.allocMu.Unlock()
		return 0, errors.New("vhd: file too large for another block")
	}
	raw := s.img.footerBytes()
	_, err := s.f.WriteAt(raw[:], newFooter)
	s.dataDirty.Store(true) // after the write: see writeBlock
	if err != nil {
		s.allocMu.Unlock()
		return 0, ioError("write footer", newFooter, err)
	}
	s.footerOff = newFooter
	s.allocMu.Unlock()

	e := uint32(bitmapOff / SectorSize)
	s.dropBitmap(b)
	// The new bitmap is all zeros in the file (the file grew over it), so
	// it goes in the cache as such: the first write needs no read.
	s.cacheBitmap(b, &bitmap{bits: make([]byte, s.bitmapSize), block: uint32(b), entry: e})
	atomic.StoreUint32(&s.bat[b], e)
	s.markBATDirty(b)
	return e, nil
}

func (s *sparse) markBATDirty(b int64) {
	s.metaMu.Lock()
	s.dirtyBAT[b*4/SectorSize] = struct{}{}
	s.metaMu.Unlock()
}

// zero makes whole sectors read as zeros. Whole blocks of a dynamic image
// are deallocated when allowed; partial blocks get zeros written (which
// allocates nothing where the block is absent).
func (s *sparse) zero(off, n int64, mode ZeroMode) error {
	if err := s.usable(); err != nil {
		return err
	}
	if mode == ZeroMayDeallocate {
		if err := s.batmapClearWhole(off, n); err != nil {
			return err
		}
	}
	return s.forBlocks(off, n, func(b, in, l int64) error {
		whole := in == 0 && l == s.sectorsIn(b)*SectorSize
		if whole && mode == ZeroMayDeallocate && s.absentReadsZero(b<<s.blockShift, l) {
			return s.deallocate(b)
		}
		keep := mode == ZeroKeepAllocated
		return s.writeZeroRange(b, in, l, keep)
	})
}

// absentReadsZero reports whether [off, off+n) reads as zeros where this
// image holds nothing: always for a dynamic image; for a differencing one
// only when no ancestor holds data there. Zeros may be elided, or a block
// deallocated, only then. Unsure (no parent, an error) means no.
func (s *sparse) absentReadsZero(off, n int64) bool {
	if !s.differencing {
		return true
	}
	if s.parent == nil {
		return false
	}
	ext, err := s.parent.Extents(off, n)
	if err != nil {
		return false
	}
	for _, e := range ext {
		if e.State == ExtentData {
			return false
		}
	}
	return true
}

// writeZeroRange writes zeros over [in, in+l) of block b.
func (s *sparse) writeZeroRange(b, in, l int64, keep bool) error {
	for l > 0 {
		c := min(l, int64(len(zeroBuf)))
		if err := s.writeBlock(b, in, zeroBuf[:c], keep); err != nil {
			return err
		}
		in += c
		l -= c
	}
	return nil
}

// trim: on a dynamic image, zeroing with deallocation. On a differencing
// image whole blocks are dropped and partial ones lose their sectors, so
// the parent's data shows through again, which TRIM allows.
func (s *sparse) trim(off, n int64) error {
	if !s.differencing {
		return s.zero(off, n, ZeroMayDeallocate)
	}
	if err := s.usable(); err != nil {
		return err
	}
	// Every block touched loses sectors: whole ones are freed, the
	// others lose their bits.
	if err := s.batmapClearRange(off, n); err != nil {
		return err
	}
	return s.forBlocks(off, n, func(b, in, l int64) error {
		if in == 0 && l == s.sectorsIn(b)*SectorSize {
			return s.deallocate(b)
		}
		return s.clearPresent(b, in, l)
	})
}

// clearPresent clears the bits of [in, in+l) in block b. Reads honour the
// bits, so the data need not go, but it is zeroed first anyway: data
// under a clear bit is what a crash leaves of unflushed writes, which
// Check reports and readers that ignore bitmaps would show.
func (s *sparse) clearPresent(b, in, l int64) error {
	mu := s.stripe(b)
	mu.Lock()
	defer mu.Unlock()
	e := s.entry(b)
	if e == batUnused {
		return nil
	}
	if err := writeZeros(s.f, s.dataOff(e)+in, l, &s.dataDirty); err != nil {
		return err
	}
	bm, err := s.loadBitmap(b, e)
	if err != nil {
		return err
	}
	s.markBitmapDirty(b, bm) // before the bits change
	s.setRange(b, bm, in/SectorSize, (in+l)/SectorSize, false)
	s.setFull(b, false)
	return nil
}

// deallocate frees block b: the BAT entry is cleared in memory (it
// reaches the disk at the next flush) and the block's space is punched
// out of the file at once. Until that flush the BAT on disk may still
// point at the punched space; it reads as a block holding no sectors,
// which is zeros (dynamic) or the parent (differencing, used only by trim
// or where the parent holds zeros) either way. The space is never reused
// for another block while the image is open, so nothing else can appear
// there; Close may cut it off the end of the file, after the flush that
// took it out of the BAT on disk (trimTail).
func (s *sparse) deallocate(b int64) error {
	mu := s.stripe(b)
	mu.Lock()
	defer mu.Unlock()
	e := s.entry(b)
	if e == batUnused {
		return nil
	}
	atomic.StoreUint32(&s.bat[b], batUnused)
	s.dropBitmap(b)
	s.markBATDirty(b)
	err := s.f.PunchHole(int64(e)*SectorSize, s.bitmapSize+s.blockSize)
	s.dataDirty.Store(true) // after the punch: see writeBlock
	if errors.Is(err, ErrUnsupported) {
		return nil // the space stays used; the data no longer is
	}
	return err
}

// isZero reports whether p is all zero bytes.
func isZero(p []byte) bool {
	for len(p) > 0 {
		c := min(len(p), len(zeroBuf))
		if !bytes.Equal(p[:c], zeroBuf[:c]) {
			return false
		}
		p = p[c:]
	}
	return true
}
