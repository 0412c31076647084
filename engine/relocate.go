package engine

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Changing an image's metadata (its parent link, its size, a BAT that
// must grow) in place would mean rewriting the two-sector dynamic header,
// and a torn write of it leaves an image no reader opens. Instead the new
// structures are written past the end of the image, and the footer, one
// sector, commits them:
//
//  1. flush (the old BAT and bitmaps are current and durable);
//  2. write the new BAT (if it grows), locator data and header after the
//     old footer, which stays valid where it is; sync;
//  3. write the new footer (pointing at the new header) at the new end;
//     sync: this is the commit point;
//  4. write the footer copy at offset 0; sync.
//
// A crash before 3 is durable leaves the old footer at the end of the
// file or, if the file grew and the end is not a valid footer, the copy
// at offset 0, which still points at the old header: the old image,
// whole. A crash between 3 and 4 leaves the copy at offset 0 stale (vhd
// check warns, repair rewrites it). The old header and BAT stay in the
// file as unused space until the image is compacted.

// metaChange is what a relocation changes.
type metaChange struct {
	size   int64       // new virtual size; 0 keeps it
	parent *ParentInfo // new parent link; nil keeps it (its locators are rewritten as they are)
}

// relocate commits a metadata change as above. The caller guarantees no
// other I/O on the image while it runs.
func (s *sparse) relocate(ch metaChange) error {
	if s.img.readOnly {
		return ErrReadOnly
	}
	if err := s.flush(); err != nil {
		return err
	}
	h := s.hdr
	ft := s.img.Footer()
	newSize := s.size
	if ch.size != 0 {
		newSize = ch.size
		setSize(&ft, ch.size)
	}
	entries := (newSize + s.blockSize - 1) >> s.blockShift
	if entries > int64(batUnused) {
		return errors.New("vhd: too many blocks")
	}
	var locData [][]byte
	if ch.parent != nil {
		h.ParentUUID, h.ParentTimestamp, h.ParentName = ch.parent.UUID, ch.parent.Timestamp, ch.parent.Name
		h.Locators = [locatorCount]Locator{}
		for i, lp := range ch.parent.Locators {
			d := EncodeLocatorPath(lp.Code, lp.Path)
			if d == nil || i >= locatorCount {
				return fmt.Errorf("vhd: cannot store parent locator %q for %q", lp.Code, lp.Path)
			}
			copy(h.Locators[i].Code[:], lp.Code)
			locData = append(locData, d)
		}
	} else {
		for i, l := range h.Locators {
			if l.Empty() {
				continue
			}
			d := make([]byte, l.DataLength)
			if err := s.pread(d, int64(l.DataOffset)); err != nil {
				return err
			}
			for len(locData) < i {
				locData = append(locData, nil)
			}
			locData = append(locData, d)
		}
	}

	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	pos := s.footerOff + FooterSize
	var bat []uint32
	newTable := s.tableOff
	if entries > int64(h.MaxTableEntries) {
		bat = make([]uint32, entries)
		for i := range bat {
			bat[i] = batUnused
			if i < len(s.bat) {
				bat[i] = s.entry(int64(i))
			}
		}
		newTable = pos
		h.TableOffset, h.MaxTableEntries = uint64(pos), uint32(entries)
		if err := s.writeBATAt(bat, pos); err != nil {
			return err
		}
		pos += batBytes(uint32(entries))
	}
	for i, d := range locData {
		if d == nil {
			continue
		}
		h.Locators[i].DataOffset = uint64(pos)
		h.Locators[i].DataLength = uint32(len(d))
		h.Locators[i].DataSpace = uint32(alignUp(int64(len(d)), SectorSize))
		if _, err := s.f.WriteAt(d, pos); err != nil {
			return ioError("write parent locator", pos, err)
		}
		pos += alignUp(int64(len(d)), SectorSize)
	}
	hdrOff := pos
	hraw := h.Marshal()
	if _, err := s.f.WriteAt(hraw[:], hdrOff); err != nil {
		return ioError("write dynamic header", hdrOff, err)
	}
	pos += HeaderSize
	if err := s.f.Sync(); err != nil {
		return s.fail(ioError("sync", 0, err))
	}
	ft.DataOffset = uint64(hdrOff)
	fraw := ft.Marshal()
	for _, off := range []int64{pos, 0} { // the end first: it commits
		if _, err := s.f.WriteAt(fraw[:], off); err != nil {
			return s.fail(ioError("write footer", off, err))
		}
		if err := s.f.Sync(); err != nil {
			return s.fail(ioError("sync", 0, err))
		}
	}

	// The change is durable; now the image in memory follows.
	s.img.footerMu.Lock()
	s.img.footer = ft
	s.img.footerMu.Unlock()
	s.hdr, s.hdrOff, s.tableOff, s.footerOff = h, hdrOff, newTable, pos
	if bat != nil {
		s.bat = bat
		s.full = append(s.full, make([]atomic.Uint64, (len(bat)+63)/64-len(s.full))...)
	} else if int64(len(s.bat)) != entries {
		s.growBAT(entries)
	}
	s.size = newSize
	s.setReserved(s.structSpans())
	return nil
}

// growBAT extends the in-memory table to n entries within the existing
// on-disk table (which has room for them).
func (s *sparse) growBAT(n int64) {
	for int64(len(s.bat)) < n {
		s.bat = append(s.bat, batUnused)
	}
	if int64(len(s.bat)) > n {
		s.bat = s.bat[:n]
	}
	if need := (len(s.bat) + 63) / 64; need > len(s.full) {
		s.full = append(s.full, make([]atomic.Uint64, need-len(s.full))...)
	}
}

// writeBATAt writes a whole table at off.
func (s *sparse) writeBATAt(bat []uint32, off int64) error {
	buf := make([]byte, batBytes(uint32(len(bat))))
	for i := range buf {
		buf[i] = 0xff
	}
	for i, e := range bat {
		buf[4*i], buf[4*i+1], buf[4*i+2], buf[4*i+3] = byte(e>>24), byte(e>>16), byte(e>>8), byte(e)
	}
	if _, err := s.f.WriteAt(buf, off); err != nil {
		return ioError("write BAT", off, err)
	}
	return nil
}

// SetParentLink rewrites a differencing image's parent link (UUID,
// timestamp, name, locators) atomically, as described in relocate.go.
// No other I/O may run on the image meanwhile.
func (img *Image) SetParentLink(p ParentInfo) error {
	if img.Type() != TypeDifferencing {
		return fmt.Errorf("%s: %w: not a differencing image", img.name, ErrUnsupportedImage)
	}
	return img.sparse.relocate(metaChange{parent: &p})
}
