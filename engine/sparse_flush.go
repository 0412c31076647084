package engine

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// flush makes every write that returned before it durable.
//
// Order, and why:
//  1. Collect the dirty bitmaps and BAT sectors. Every bit collected was
//     set after its data write returned (writeBlock), and every BAT
//     entry after its block's footer was written (allocate).
//  2. Sync: that data, the new blocks' space and footers are durable.
//  3. Write the bitmaps, then the BAT sectors.
//  4. Sync: the metadata is durable.
//
// A crash before 4 leaves some of step 3 on disk and some not; each piece
// alone points only at durable data (step 2), so any mix is consistent
// and everything flushed before this flush is intact. Metadata is never
// written outside a flush, so the disk never holds a BAT entry or bit
// ahead of its data.
func (s *sparse) flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	bitmaps, batSectors := s.collectDirty()
	defer s.doneFlushing()
	if !s.dataDirty.Swap(false) && len(bitmaps) == 0 && len(batSectors) == 0 {
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return s.fail(ioError("sync", 0, err))
	}
	for _, w := range bitmaps {
		if _, err := s.f.WriteAt(w.data, w.off); err != nil {
			return s.fail(ioError("write bitmap", w.off, err))
		}
	}
	for _, w := range batSectors {
		if _, err := s.f.WriteAt(w.data, w.off); err != nil {
			return s.fail(ioError("write BAT", w.off, err))
		}
	}
	stamped, err := s.writeStamp()
	if err != nil {
		return s.fail(err)
	}
	if len(bitmaps) == 0 && len(batSectors) == 0 && !stamped {
		// Only data was written (into blocks whose sectors were all
		// present already): the first sync made it durable, and there
		// is no metadata to order after it.
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return s.fail(ioError("sync", 0, err))
	}
	return nil
}

// writeStamp writes the footer with its modification stamp at the end
// of the file and at offset 0, the first time a flush writes data. Each
// copy is a whole valid footer whether it holds the old stamp or the new,
// so a crash between the two leaves the copies differing (vhd check
// warns, repair rewrites the copy), never a broken image.
func (s *sparse) writeStamp() (bool, error) {
	raw, ok := s.img.stampFooter()
	if !ok {
		return false, nil
	}
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	for _, off := range []int64{s.footerOff, 0} {
		if _, err := s.f.WriteAt(raw[:], off); err != nil {
			return false, ioError("write footer", off, err)
		}
	}
	return true, nil
}

// fail marks the image unwritable: after a failed write or sync of
// metadata, what reached the disk is unknown, and writing on could
// break the ordering above. Reopening the image recovers.
func (s *sparse) fail(err error) error {
	err = fmt.Errorf("%w (image is now read-only until reopened)", err)
	s.failed.CompareAndSwap(nil, &err)
	return err
}

type pendingWrite struct {
	off  int64
	data []byte
}

// collectDirty takes copies of the dirty bitmaps and BAT sectors and
// marks them clean. The bitmaps stay in flushing, safe from eviction,
// until the flush has written them (doneFlushing).
func (s *sparse) collectDirty() (bitmaps, bat []pendingWrite) {
	s.metaMu.Lock()
	blocks := make([]uint32, 0, len(s.dirtyBitmaps))
	for b := range s.dirtyBitmaps {
		blocks = append(blocks, b)
		s.flushing[b] = struct{}{}
	}
	clear(s.dirtyBitmaps)
	sectors := make([]int64, 0, len(s.dirtyBAT))
	for sec := range s.dirtyBAT {
		sectors = append(sectors, sec)
	}
	clear(s.dirtyBAT)
	s.metaMu.Unlock()

	slices.Sort(blocks)
	for _, b := range blocks {
		if w, ok := s.bitmapWrite(int64(b)); ok {
			bitmaps = append(bitmaps, w)
		}
	}
	slices.Sort(sectors)
	for _, sec := range sectors {
		bat = append(bat, s.batSectorWrite(sec))
	}
	return bitmaps, bat
}

// doneFlushing lets the cache evict the bitmaps the flush has written.
func (s *sparse) doneFlushing() {
	s.metaMu.Lock()
	clear(s.flushing)
	s.metaMu.Unlock()
}

// bitmapWrite copies block b's bitmap under its stripe lock, so the copy
// holds only bits whose data writes have returned.
func (s *sparse) bitmapWrite(b int64) (pendingWrite, bool) {
	mu := s.stripe(b)
	mu.Lock()
	defer mu.Unlock()
	s.metaMu.Lock()
	bm := s.bitmaps[uint32(b)]
	s.metaMu.Unlock()
	if bm == nil || bm.entry != s.entry(b) {
		return pendingWrite{}, false // deallocated since
	}
	return pendingWrite{off: int64(bm.entry) * SectorSize, data: slices.Clone(bm.bits)}, true
}

// batSectorWrite encodes one sector of the BAT from memory. Entries past
// the disk's blocks (the table may be longer) are left unallocated.
func (s *sparse) batSectorWrite(sec int64) pendingWrite {
	buf := make([]byte, SectorSize)
	first := sec * SectorSize / 4
	for i := int64(0); i < SectorSize/4; i++ {
		e := uint32(batUnused)
		if first+i < int64(len(s.bat)) {
			e = s.entry(first + i)
		}
		binary.BigEndian.PutUint32(buf[4*i:], e)
	}
	return pendingWrite{off: s.tableOff + sec*SectorSize, data: buf}
}

// rewriteTail writes the footer back at the end of the data and cuts the
// file there: used when the footer at the end was damaged. Everything
// past the last block referenced by the BAT is a block whose allocation
// never reached a flush, so nothing flushed is cut. Slack too small to
// be such a block is kept, footer and all (see orphanTail).
func (s *sparse) rewriteTail() error {
	end := s.dataEnd()
	if s.footerOff > end && s.orphanTail(s.footerOff) == 0 {
		// On a sector boundary: a crash in a relocation can leave the
		// file ending in part of a locator's data, and a footer put at
		// an odd offset would have the next relocation write its header
		// there too, which no reader accepts.
		end = s.footerOff / SectorSize * SectorSize
	}
	return s.cutTail(end)
}

// cutTail writes the footer at end and cuts the file after it.
func (s *sparse) cutTail(end int64) error {
	// The footer at the cut is made durable before the cut: whatever
	// lies there before it (an old footer naming a header a relocation
	// has since replaced) must never end the file.
	raw := s.img.footerBytes()
	if _, err := s.f.WriteAt(raw[:], end); err != nil {
		return ioError("write footer", end, err)
	}
	if err := s.f.Sync(); err != nil {
		return ioError("sync", 0, err)
	}
	if err := s.f.Truncate(end + FooterSize); err != nil {
		return ioError("truncate", end+FooterSize, err)
	}
	if err := s.f.Sync(); err != nil {
		return ioError("sync", 0, err)
	}
	s.allocMu.Lock()
	s.footerOff = end
	s.allocMu.Unlock()
	return nil
}

// orphanTail is how many bytes before a footer at footerOff are space of
// blocks whose allocation never reached a flush: the gap after the last
// structure the image uses, or 0 when the gap is smaller than one block
// (bitmap and data), since every allocation adds at least that much.
// Other writers leave smaller gaps on purpose: Windows pads so that the
// first block's data lands 4 KiB aligned, and blktap keeps its batmap
// (which the header does not declare) right after the BAT. Calling those
// orphans made Check warn on every Windows and XenServer image, and
// Repair cut a XenServer image's batmap off.
func (s *sparse) orphanTail(footerOff int64) int64 {
	gap := footerOff - s.dataEnd()
	if gap < s.bitmapSize+s.blockSize {
		return 0
	}
	return gap
}

// trimTail cuts the file after the last allocated block, when the image
// closes. Blocks deallocated at the end of the file leave their space
// behind (it is never reused while the image is open: see deallocate),
// and Check reports space past the last block. The flush just before
// made the BAT in the file what it is in memory, so nothing the file
// references is cut. rewriteTail writes the footer at the cut and syncs
// it before it cuts, so whichever of its steps a crash keeps, the file
// ends in the current footer: at the cut, or still at the old end. (What
// sat at the cut before, an old footer, may name a header a relocation
// has since replaced.) Also run after a relocation moves metadata from
// past the end back in front of the blocks (tidyMeta).
func (s *sparse) trimTail() error {
	s.allocMu.Lock()
	footerOff := s.footerOff
	s.allocMu.Unlock()
	if s.dataEnd() >= footerOff {
		return nil
	}
	return s.rewriteTail()
}

// dataEnd is the end of the last structure the image uses: the end of the
// last allocated block, or of the headers, BAT and locators.
func (s *sparse) dataEnd() int64 {
	var end int64
	for _, r := range s.reserved {
		end = max(end, r.end())
	}
	for i := range s.bat {
		if e := s.entry(int64(i)); e != batUnused {
			end = max(end, s.dataOff(e)+s.blockSize)
		}
	}
	return alignUp(end, SectorSize)
}

func (s *sparse) extents(off, n int64) ([]Extent, error) {
	var list []Extent
	err := s.forBlocks(off, n, func(b, in, l int64) error {
		pos := b<<s.blockShift + in
		e := s.entry(b)
		if e == batUnused {
			list = appendExtent(list, Extent{Off: pos, Len: l, State: ExtentHole})
			return nil
		}
		if s.isFull(b) {
			list = appendExtent(list, Extent{Off: pos, Len: l, State: ExtentData})
			return nil
		}
		bits, err := s.bitmapCopy(b, e)
		if err != nil {
			return err
		}
		for i := in; i < in+l; {
			sec := i / SectorSize
			st := ExtentHole
			if bitSet(bits, sec) {
				st = ExtentData
			}
			next := min((sec+1)*SectorSize, in+l)
			list = appendExtent(list, Extent{Off: b<<s.blockShift + i, Len: next - i, State: st})
			i = next
		}
		return nil
	})
	return list, err
}
