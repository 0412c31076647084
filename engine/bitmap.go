package engine

import "sync/atomic"

// Sector bitmaps: bit i (MSB first) of a block's bitmap is set when the
// image holds sector i of the block.

func bitSet(bits []byte, i int64) bool { return bits[i/8]&(0x80>>(i%8)) != 0 }

// setBits sets (or clears) bits [from, to).
func setBits(bits []byte, from, to int64, on bool) {
	for i := from; i < to; {
		if i%8 == 0 && to-i >= 8 {
			if on {
				bits[i/8] = 0xff
			} else {
				bits[i/8] = 0
			}
			i += 8
			continue
		}
		if on {
			bits[i/8] |= 0x80 >> (i % 8)
		} else {
			bits[i/8] &^= 0x80 >> (i % 8)
		}
		i++
	}
}

// allSet reports whether bits [0, n) are all set.
func allSet(bits []byte, n int64) bool {
	for i := int64(0); i < n/8; i++ {
		if bits[i] != 0xff {
			return false
		}
	}
	for i := n / 8 * 8; i < n; i++ {
		if !bitSet(bits, i) {
			return false
		}
	}
	return true
}

// loadBitmap returns block b's bitmap, reading it if it is not cached.
// The caller holds b's stripe lock and e is b's current BAT entry.
func (s *sparse) loadBitmap(b int64, e uint32) (*bitmap, error) {
	slot := s.recentSlot(b)
	if bm := slot.Load(); bm != nil && bm.block == uint32(b) && bm.entry == e {
		return bm, nil
	}
	s.metaMu.Lock()
	bm := s.bitmaps[uint32(b)]
	s.metaMu.Unlock()
	if bm != nil && bm.entry == e {
		slot.Store(bm)
		return bm, nil
	}
	bm = &bitmap{bits: make([]byte, s.bitmapSize), block: uint32(b), entry: e}
	if err := s.pread(bm.bits, int64(e)*SectorSize); err != nil {
		return nil, err
	}
	s.clearPastEnd(e, bm.bits)
	if s.entry(b) != e {
		// A reader that took the entry before the block was freed (and
		// perhaps allocated anew): it may read the old place, but what
		// it read must neither set the full flag nor replace the cached
		// bitmap of the block as it is now, whose bits it would lose.
		return bm, nil
	}
	if allSet(bm.bits, s.sectorsIn(b)) {
		s.setFull(b, true)
	}
	s.summarize(b, bm, 0, s.blockSize/SectorSize)
	s.cacheBitmap(b, bm)
	return bm, nil
}

// recentSlot is block b's slot in recent.
func (s *sparse) recentSlot(b int64) *atomic.Pointer[bitmap] {
	return &s.recent[b&int64(len(s.recent)-1)]
}

// cacheBitmap puts block b's bitmap in the cache, making room if needed.
// The caller holds b's stripe lock.
func (s *sparse) cacheBitmap(b int64, bm *bitmap) {
	s.recentSlot(b).Store(bm)
	s.metaMu.Lock()
	if old := s.bitmaps[uint32(b)]; old != nil {
		s.bitmapBytes -= int64(len(old.bits))
	}
	s.bitmaps[uint32(b)] = bm
	s.bitmapBytes += int64(len(bm.bits))
	if s.bitmapBytes > maxCachedBitmapBytes {
		s.evictCleanLocked(uint32(b))
	}
	s.metaMu.Unlock()
}

// evictCleanLocked drops clean cached bitmaps until the cache is half its
// limit, keeping keep. Called with metaMu held. A clean bitmap may be
// dropped without its stripe lock: its bits are in the file and it is
// only ever re-read. Clean means neither dirty nor taken by a running
// flush that has not written it yet (flushing); and a writer queues a
// bitmap as dirty before it changes its bits (markBitmapDirty).
func (s *sparse) evictCleanLocked(keep uint32) {
	for b, bm := range s.bitmaps {
		if s.bitmapBytes <= maxCachedBitmapBytes/2 {
			return
		}
		_, dirty := s.dirtyBitmaps[b]
		_, flushing := s.flushing[b]
		if dirty || flushing || b == keep {
			continue
		}
		delete(s.bitmaps, b)
		s.bitmapBytes -= int64(len(bm.bits))
	}
}

// bitmapCopy returns a copy of block b's bitmap, for readers.
func (s *sparse) bitmapCopy(b int64, e uint32) ([]byte, error) {
	mu := s.stripe(b)
	mu.Lock()
	defer mu.Unlock()
	bm, err := s.loadBitmap(b, e)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), bm.bits...), nil
}

// markBitmapDirty queues block b's bitmap bm for the next flush and says
// whether too many are queued. The caller holds b's stripe lock and
// calls it before it changes bm's bits: once queued, bm is never evicted,
// so the flush finds the bits the caller sets. If bm was evicted since
// loadBitmap returned it (other blocks' loads evict clean bitmaps without
// b's stripe lock), it goes back in the cache; it is still what the file
// holds, since only b's stripe lock holders change it.
func (s *sparse) markBitmapDirty(b int64, bm *bitmap) (tooMany bool) {
	s.metaMu.Lock()
	if old := s.bitmaps[uint32(b)]; old != bm {
		if old != nil {
			s.bitmapBytes -= int64(len(old.bits))
		}
		s.bitmaps[uint32(b)] = bm
		s.bitmapBytes += int64(len(bm.bits))
	}
	s.dirtyBitmaps[uint32(b)] = struct{}{}
	tooMany = len(s.dirtyBitmaps) > maxDirtyBitmaps
	s.metaMu.Unlock()
	return tooMany
}

// dropBitmap drops block b's bitmap (its block was deallocated). The
// caller holds b's stripe lock.
func (s *sparse) dropBitmap(b int64) {
	if slot := s.recentSlot(b); slot.Load() != nil && slot.Load().block == uint32(b) {
		slot.Store(nil)
	}
	s.metaMu.Lock()
	if bm := s.bitmaps[uint32(b)]; bm != nil {
		delete(s.bitmaps, uint32(b))
		s.bitmapBytes -= int64(len(bm.bits))
	}
	delete(s.dirtyBitmaps, uint32(b))
	s.metaMu.Unlock()
	s.setFull(b, false)
}
