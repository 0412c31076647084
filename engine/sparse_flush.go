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
	if err := s.f.Sync(); err != nil {
		return s.fail(ioError("sync", 0, err))
	}
	return nil
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
// marks them clean.
func (s *sparse) collectDirty() (bitmaps, bat []pendingWrite) {
	s.metaMu.Lock()
	blocks := make([]uint32, 0, len(s.dirtyBitmaps))
	for b := range s.dirtyBitmaps {
		blocks = append(blocks, b)
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
// never reached a flush, so nothing flushed is cut.
func (s *sparse) rewriteTail() error {
	end := s.dataEnd()
	raw := s.img.footer.Marshal()
	if _, err := s.f.WriteAt(raw[:], end); err != nil {
		return ioError("write footer", end, err)
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

// cutFreedTail gives back space freed at the end of the file: when the
// blocks last in the file were deallocated (trim, zero), nothing the BAT
// references lies past dataEnd, and check would report the space as
// unreferenced. Called by Close after the final flush, when no write can
// race with it; a crash midway is the rewriteTail case repair handles.
func (s *sparse) cutFreedTail() error {
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
