package engine

// Reading sector bitmaps. Reads of a block that is not full must honour
// its bitmap (see sparse.readAt), so they find out, per read, whether
// the sectors they cover are present. Most reads need no lock for that:
// each cached bitmap keeps a summary, one bit per 64th of the block
// (present), set when every sector of that part is present, and
// recent finds the bitmap a block used last without the cache's lock.
// Only reads that the summary cannot answer (a part with clear bits) lock
// the block's stripe and look at the bits themselves.

// presentFast reports, without a lock, whether sectors [in, in+l) of
// block b (at BAT entry e) are all present, going by the summary of the
// block's bitmap in recent; false when it cannot tell.
//
// Why that is safe: the bitmap in recent for b and e is the block's
// current one (see sparse.recent); its summary changes only under the
// stripe lock, after the bits; a summary bit is set only when every
// sector of its part is present, and cleared when one is not. So a set
// bit read here was true at some moment during this read, and a read
// that races with a trim or a write may return either side, as it may
// anyway. (An older bitmap object for b, left by eviction, is reachable
// only by a read that began before the newer one was made.)
func (s *sparse) presentFast(b int64, e uint32, in, l int64) bool {
	bm := s.recentSlot(b).Load()
	if bm == nil || bm.block != uint32(b) || bm.entry != e {
		return false
	}
	lo := in / SectorSize >> s.partShift
	hi := (in + l - 1) / SectorSize >> s.partShift
	want := (uint64(2)<<hi - 1) &^ (uint64(1)<<lo - 1)
	return bm.present.Load()&want == want
}

// summarize brings the summary of block b's bitmap bm up to date for the
// parts that overlap sectors [from, to). The caller holds b's stripe
// lock and has changed those bits.
func (s *sparse) summarize(b int64, bm *bitmap, from, to int64) {
	n := s.sectorsIn(b)
	sum := bm.present.Load()
	for k := from >> s.partShift; k <= (to-1)>>s.partShift; k++ {
		lo := k << s.partShift
		hi := min(lo+1<<s.partShift, n)
		if lo >= hi {
			sum |= 1 << k // past the disk's end counts as present: never read
			continue
		}
		if _, clr := bitsIn(bm.bits, lo, hi); clr {
			sum &^= 1 << k
		} else {
			sum |= 1 << k
		}
	}
	bm.present.Store(sum)
}

// setRange sets or clears bits [from, to) of block b's bitmap bm and its
// summary. The caller holds b's stripe lock and has queued bm for the
// next flush.
func (s *sparse) setRange(b int64, bm *bitmap, from, to int64, on bool) {
	setBits(bm.bits, from, to, on)
	s.summarize(b, bm, from, to)
}

// rangeState says whether a run of sectors is all present, all absent
// or mixed.
type rangeState uint8

const (
	mixed rangeState = iota
	allPresent
	allAbsent
)

// bitRange reads the bits of sectors [from, to) of block b (at BAT entry
// e), loading its bitmap if need be. When they are all set or all clear
// it says so; otherwise it returns them appended to dst, starting at the
// byte that holds bit from: sector i is bit i-base of bits.
func (s *sparse) bitRange(b int64, e uint32, from, to int64, dst []byte) (bits []byte, base int64, st rangeState, err error) {
	mu := s.stripe(b)
	mu.Lock()
	bm, err := s.loadBitmap(b, e)
	if err != nil {
		mu.Unlock()
		return nil, 0, mixed, err
	}
	switch set, clr := bitsIn(bm.bits, from, to); {
	case !clr:
		st = allPresent
	case !set:
		st = allAbsent
	default:
		bits, base = append(dst, bm.bits[from/8:(to+7)/8]...), from/8*8
	}
	mu.Unlock()
	return bits, base, st, nil
}

// bitsIn reports whether any of bits [from, to) is set, and any clear.
func bitsIn(bits []byte, from, to int64) (set, clr bool) {
	end := runEnd(bits, from, to, bitSet(bits, from))
	if bitSet(bits, from) {
		return true, end < to
	}
	return end < to, true
}

// runEnd is where the run of bits equal to on that starts at i ends,
// at most at end. Whole bytes are skipped at a time.
func runEnd(bits []byte, i, end int64, on bool) int64 {
	var same byte // a byte whose 8 bits are all on
	if on {
		same = 0xff
	}
	for i < end {
		if i%8 == 0 && end-i >= 8 {
			if bits[i/8] != same {
				break
			}
			i += 8
			continue
		}
		if bitSet(bits, i) != on {
			return i
		}
		i++
	}
	// Within the byte that differs, bit by bit.
	for i < end && bitSet(bits, i) == on {
		i++
	}
	return i
}
