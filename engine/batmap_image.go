package engine

import (
	"slices"
	"sync"
)

// An image's blktap batmap (batmap.go) as the engine keeps it: read when
// the image opens, and changed only to clear bits, durably, before a
// block stops being full. The engine never sets a bit: a clear bit is
// always true (blktap then reads the block's bitmap, and sets the bit
// again itself once its writes fill the block).

// batmapState is the batmap of an open image, as its file holds it.
type batmapState struct {
	// mu serializes changes to the map and their writes.
	mu     sync.Mutex
	hdrOff int64
	hdr    BatmapHeader
	// bits is the start of the map as the file holds it: the part the
	// checksum covers, and a bit for every block of the disk. Guarded by
	// mu.
	bits []byte
	// found is set when a header with a map inside the file sits after
	// the BAT, clear of the other structures and blocks: its sector and
	// its map are then reserved, like the BAT.
	found bool
	// bad says why blktap does not trust the batmap, nil when it does: a
	// damaged header, a map the file does not hold, a wrong checksum.
	// blktap then never skips a bitmap update on its account (tapdisk
	// refuses to open the image for writing), so nothing need be cleared.
	bad error
}

// trusted reports whether blktap believes the batmap.
func (bm *batmapState) trusted() bool { return bm != nil && bm.bad == nil }

// spans are the batmap's header sector and map.
func (bm *batmapState) spans() []span {
	return []span{
		{bm.hdrOff, BatmapHeaderSize, "batmap header"},
		{int64(bm.hdr.MapOffset), bm.hdr.MapBytes(), "batmap"},
	}
}

// batmapNeed is how many bytes of map the engine reads and keeps for
// this image: the checksummed part, and a bit for every block.
func (s *sparse) batmapNeed() int64 {
	return max(batmapSumBytes(uint64(s.size)), alignUp((s.blocks()+7)/8, SectorSize))
}

// loadBatmap reads the batmap of an image blktap keeps one in. Damage
// does not stop the open (the engine reads the image without it): it is
// recorded for Check, and blktap will not trust the batmap either.
func (s *sparse) loadBatmap(fileSize int64) error {
	rule := batmapRuleOf(&s.img.footer)
	if rule == batmapNever {
		return nil
	}
	bm := &batmapState{hdrOff: batmapHeaderOff(s.tableOff, s.hdr.MaxTableEntries)}
	err := bm.read(s, s.img.dataLimit(fileSize))
	if isIO(err) {
		return err
	}
	if rule == batmapMaybe && !bm.found {
		return nil // an image of version 1.1 without one
	}
	bm.bad = err
	s.batmap = bm
	return nil
}

// read reads and checks the header and the map; limit is where the data
// area ends.
func (bm *batmapState) read(s *sparse, limit int64) error {
	if bm.hdrOff > limit-BatmapHeaderSize {
		return corrupt("batmap", "", bm.hdrOff, "the header after the BAT would lie past the end of the data area (%#x)", limit)
	}
	var raw [BatmapHeaderSize]byte
	if _, err := s.f.ReadAt(raw[:], bm.hdrOff); err != nil {
		return ioError("read batmap header", bm.hdrOff, err)
	}
	h, err := ParseBatmapHeader(raw[:], bm.hdrOff)
	if err != nil {
		return err
	}
	bm.hdr = h
	mapOff := int64(h.MapOffset)
	if mapOff > limit || h.MapBytes() > limit-mapOff {
		return corrupt("batmap", "map offset", bm.hdrOff+offBatmapOffset, "the map at %#x+%d runs past the end of the data area (%#x)", mapOff, h.MapBytes(), limit)
	}
	if err := s.batmapClash(bm.spans()); err != nil {
		return err
	}
	bm.found = true
	need := s.batmapNeed()
	if h.MapBytes() < need {
		return corrupt("batmap", "map size", bm.hdrOff+offBatmapSize, "%d sectors cannot hold the %d bytes blktap reads for this disk", h.MapSize, need)
	}
	bm.bits = make([]byte, need)
	if _, err := s.f.ReadAt(bm.bits, mapOff); err != nil {
		return ioError("read batmap", mapOff, err)
	}
	sum := batmapChecksum(bm.bits[:batmapSumBytes(uint64(s.size))], h.Version)
	if sum != h.Checksum {
		return corrupt("batmap", "checksum", bm.hdrOff+offBatmapChecksum, "is %#08x, the map sums to %#08x", h.Checksum, sum)
	}
	return nil
}

// batmapClash reports a batmap span (as sp lists them) that overlaps
// another structure or a block.
func (s *sparse) batmapClash(sp []span) error {
	others := s.structSpans()
	for i := range s.bat {
		if e := s.entry(int64(i)); e != batUnused {
			others = append(others, span{int64(e) * SectorSize, s.bitmapSize + s.blockSize, "block"})
		}
	}
	for _, b := range sp {
		for _, o := range others {
			if o.what != "batmap header" && o.what != "batmap" && b.overlaps(o) {
				return corrupt("batmap", "", b.off, "the %s at %#x+%d overlaps the %s at %#x", b.what, b.off, b.len, o.what, o.off)
			}
		}
	}
	return nil
}

// batmapSet reports whether block b's batmap bit is set (and trusted).
func (s *sparse) batmapSet(b int64) bool {
	bm := s.batmap
	if !bm.trusted() {
		return false
	}
	bm.mu.Lock()
	defer bm.mu.Unlock()
	return b < int64(len(bm.bits))*8 && bitSet(bm.bits, b)
}

// batmapClear clears the batmap bits of blocks [from, to) and makes that
// durable, before the caller does anything that may leave one of them
// not full: frees it, clears bitmap bits, or allocates it (a bit left
// set over an unallocated block would be trusted once blktap or the
// engine allocates it).
//
// Order, and why: the changed map sectors and the header (whose checksum
// covers the map) are written, then synced, and only then does the
// caller change a block. A crash before the sync is durable leaves the
// old batmap whole (every bit still true: no block has changed yet), or
// a mix of old and new sectors; clearing only takes bits away, so every
// mix but those two sums to neither checksum, and blktap distrusts the
// whole batmap (tapdisk refuses to write the image, vhd-util check
// reports it; vhd check says batmap-invalid and vhd repair rebuilds it).
// No crash leaves a trusted bit over a block that is not full.
func (s *sparse) batmapClear(from, to int64) error {
	bm := s.batmap
	if !bm.trusted() {
		return nil
	}
	bm.mu.Lock()
	defer bm.mu.Unlock()
	to = min(to, int64(len(bm.bits))*8)
	var sectors []int64
	for b := max(from, 0); b < to; b++ {
		if bitSet(bm.bits, b) {
			if sec := b / 8 / SectorSize; !slices.Contains(sectors, sec) {
				sectors = append(sectors, sec)
			}
		}
	}
	if len(sectors) == 0 {
		return nil
	}
	if err := s.usable(); err != nil {
		return err
	}
	setBits(bm.bits, max(from, 0), to, false)
	return s.writeBatmapLocked(sectors)
}

// writeBatmapLocked writes the given sectors of the map and the header
// with the map's checksum, then syncs (see batmapClear for the order).
// The caller holds bm.mu.
func (s *sparse) writeBatmapLocked(sectors []int64) error {
	bm := s.batmap
	bm.hdr.Checksum = batmapChecksum(bm.bits[:batmapSumBytes(uint64(s.size))], bm.hdr.Version)
	for _, sec := range sectors {
		off := int64(bm.hdr.MapOffset) + sec*SectorSize
		if _, err := s.f.WriteAt(bm.bits[sec*SectorSize:][:SectorSize], off); err != nil {
			return s.fail(ioError("write batmap", off, err))
		}
	}
	raw := bm.hdr.Marshal()
	if _, err := s.f.WriteAt(raw[:], bm.hdrOff); err != nil {
		return s.fail(ioError("write batmap header", bm.hdrOff, err))
	}
	if err := s.f.Sync(); err != nil {
		return s.fail(ioError("sync", 0, err))
	}
	return nil
}

// batmapClearRange clears the batmap bits of the blocks [off, off+n) of
// the disk touches, for a zero or trim about to run over that range.
func (s *sparse) batmapClearRange(off, n int64) error {
	if s.batmap == nil || n <= 0 {
		return nil
	}
	return s.batmapClear(off>>s.blockShift, (off+n-1)>>s.blockShift+1)
}

// batmapClearWhole clears the batmap bits of the blocks [off, off+n)
// covers whole (including the disk's last block, when the range reaches
// the disk's end): the blocks a zero that may deallocate frees. Zeros
// written into part of a block leave it as full as it was.
func (s *sparse) batmapClearWhole(off, n int64) error {
	if s.batmap == nil || n <= 0 {
		return nil
	}
	from := (off + s.blockSize - 1) >> s.blockShift
	to := (off + n) >> s.blockShift
	if off+n >= s.size {
		to = s.blocks()
	}
	if from >= to {
		return nil
	}
	return s.batmapClear(from, to)
}
