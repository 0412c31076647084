package engine

import "fmt"

// Checking and rebuilding blktap's batmap (batmap.go). A bit set over a
// block that is not allocated, or whose bitmap has a clear bit, makes
// blktap lose the writes it later makes there (they skip the bitmap):
// batmap-stale, fatal for blktap, and fixable. A batmap blktap does not
// believe (damaged header, wrong checksum, a map the file does not hold)
// makes tapdisk refuse to write the image: batmap-invalid, fixable when
// there is room to write it again. Repair rebuilds either from the
// bitmaps: a bit for each allocated block whose every sector is present.

// checkBatmap reports what is wrong with the image's batmap.
func (c *checker) checkBatmap(s *sparse) error {
	bm := s.batmap
	if bm == nil {
		return nil
	}
	if bm.bad != nil {
		_, fixable := s.batmapRebuildPlace()
		how := "Xen's tapdisk will not write this image until it is rebuilt"
		if !fixable {
			how += "; there is no room to rebuild it where blktap looks for it (vhd compact lays the image out anew)"
		}
		c.problem(CodeBatmapInvalid, false, fixable, bm.hdrOff, "blktap's batmap is damaged (%v): %s", bm.bad, how)
		return nil
	}
	stale, err := s.batmapStale()
	if err != nil {
		return err
	}
	for _, b := range stale {
		why := "its bitmap has clear bits"
		if s.entry(b) == batUnused {
			why = "it is not allocated"
		}
		c.problem(CodeBatmapStale, true, true, bm.hdrOff, "blktap's batmap marks block %d full, but %s: blktap would skip the bitmap for writes there and lose them", b, why)
	}
	return nil
}

// batmapStale lists the blocks whose batmap bit is set although the block
// is not allocated or not full, reading the bitmaps of the allocated
// ones.
func (s *sparse) batmapStale() ([]int64, error) {
	bm := s.batmap
	var stale []int64
	var marked []uint32
	for b := range s.blocks() {
		if !bitSet(bm.bits, b) {
			continue
		}
		if s.entry(b) == batUnused {
			stale = append(stale, b)
		} else {
			marked = append(marked, uint32(b))
		}
	}
	full, err := s.fullOnDisk(marked)
	if err != nil {
		return nil, err
	}
	for i, b := range marked {
		if !full[i] {
			stale = append(stale, int64(b))
		}
	}
	return stale, nil
}

// fullOnDisk reports, for each allocated block, whether its bitmap in the
// file has every sector of the block present.
func (s *sparse) fullOnDisk(blocks []uint32) ([]bool, error) {
	full := make([]bool, 0, len(blocks))
	batch := bitmapBatch(s.bitmapSize)
	bits := make([]byte, int64(min(batch, len(blocks)))*s.bitmapSize)
	for len(blocks) > 0 {
		n := min(batch, len(blocks))
		if err := s.readBitmaps(s.f, blocks[:n], bits); err != nil {
			return nil, err
		}
		for i, b := range blocks[:n] {
			full = append(full, allSet(bits[int64(i)*s.bitmapSize:][:s.bitmapSize], s.sectorsIn(int64(b))))
		}
		blocks = blocks[n:]
	}
	return full, nil
}

// batmapRebuildPlace says where a rebuilt batmap goes: where the header
// puts the map, when it is sound and large enough, else a fresh header
// and map right after the BAT, where blktap makes them; ok is false when
// that space is not free.
func (s *sparse) batmapRebuildPlace() (h BatmapHeader, ok bool) {
	bm := s.batmap
	need := s.batmapNeed()
	if bm.found && bm.hdr.MapBytes() >= need {
		h = bm.hdr
		if h.Version != batmapVersion11 {
			h.Version = batmapVersion
		}
		return h, true
	}
	h = BatmapHeader{
		MapOffset: uint64(bm.hdrOff + BatmapHeaderSize),
		MapSize:   max(batmapMapSectors(s.hdr.MaxTableEntries), uint32(need/SectorSize)),
		Version:   batmapVersion,
	}
	fresh := &batmapState{hdrOff: bm.hdrOff, hdr: h}
	size, err := s.f.Size()
	if err != nil || fresh.hdrOff+BatmapHeaderSize+h.MapBytes() > s.img.dataLimit(size) {
		return h, false
	}
	return h, s.batmapClash(fresh.spans()) == nil
}

// healBatmap writes a batmap blktap does not trust (a crash in the middle
// of batmapClear leaves one) anew with every bit clear, when an image is
// opened for writing: a clear bit is always true, it costs no bitmap
// reads, and tapdisk can write the image again. Repair does better
// (rebuildBatmap). Where there is no room for it, it stays as it is.
func (s *sparse) healBatmap() error {
	bm := s.batmap
	if bm == nil || bm.bad == nil {
		return nil
	}
	h, ok := s.batmapRebuildPlace()
	if !ok {
		return nil
	}
	bm.mu.Lock()
	defer bm.mu.Unlock()
	bm.hdr, bm.bits, bm.found = h, make([]byte, s.batmapNeed()), true
	if err := s.writeBatmapLocked(allSectors(bm.bits)); err != nil {
		return err
	}
	bm.bad = nil
	return nil
}

func allSectors(b []byte) []int64 {
	sectors := make([]int64, len(b)/SectorSize)
	for i := range sectors {
		sectors[i] = int64(i)
	}
	return sectors
}

// rebuildBatmap writes the batmap anew from the bitmaps: a bit for every
// allocated block whose bitmap is full, the rest clear. Every set bit is
// then true, since the bitmaps read are what the file holds. Order: the
// map, then the header, then a sync; a crash between them leaves a map
// that does not match the header's checksum, which blktap distrusts and
// running Repair again rebuilds. It reports what it did.
func (s *sparse) rebuildBatmap() (string, error) {
	h, ok := s.batmapRebuildPlace()
	if !ok {
		return "", fmt.Errorf("vhd: no room to rebuild blktap's batmap at %#x", s.batmap.hdrOff)
	}
	var alloc []uint32
	for b := range s.blocks() {
		if s.entry(b) != batUnused {
			alloc = append(alloc, uint32(b))
		}
	}
	full, err := s.fullOnDisk(alloc)
	if err != nil {
		return "", err
	}
	bm := s.batmap
	bm.mu.Lock()
	defer bm.mu.Unlock()
	bm.hdr, bm.bits, bm.found = h, make([]byte, s.batmapNeed()), true
	set := 0
	for i, b := range alloc {
		if full[i] {
			setBits(bm.bits, int64(b), int64(b)+1, true)
			set++
		}
	}
	if err := s.writeBatmapLocked(allSectors(bm.bits)); err != nil {
		return "", err
	}
	bm.bad = nil
	return fmt.Sprintf("rebuilt blktap's batmap from the bitmaps (%d of %d blocks marked full)", set, s.blocks()), nil
}
