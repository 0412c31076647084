package engine

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Changing an image's metadata (its parent link, its size, a BAT that
// must grow) in place would mean rewriting the two-sector dynamic header,
// and a torn write of it leaves an image no reader opens. Instead the new
// structures are written where the committed image has nothing, and the
// footer, one sector, commits them:
//
//  1. flush (the old BAT and bitmaps are current and durable), and make
//     the footer copy at offset 0 the footer at the end, so that both
//     name the header in force and no space either relies on is reused;
//  2. write the new header, locator data and, if the BAT moves, the new
//     BAT (and blktap's batmap after it) into free space; sync;
//  3. write the new footer (pointing at the new header) at the end of
//     the file: over the old one when everything fit in free space, else
//     past it, after what went there; sync: this is the commit point;
//  4. write the footer copy at offset 0; sync.
//
// A crash before 3 is durable leaves the old footer at the end of the
// file (or, if the file grew and the end is not a valid footer, the copy
// at offset 0), naming the old header, BAT and locators, none of which
// step 2 touched: the old image, whole. A crash between 3 and 4 leaves
// the copy at offset 0 stale (vhd check warns, repair rewrites it); a
// new UUID commits at step 4 instead (setuuid.go says why).
//
// Free space is sought first before the first data block: Xen's tools
// want every structure there (relocate_space.go), and vhdkit's own images
// leave room there (data aligned to 1 MiB; differencing images reserve
// room for a second header and set of locators, metaReserve). A BAT
// grows in place into the free space after it. Past the end of the file
// is the fallback; when something lands there and blocks precede it, a
// second relocation that changes nothing moves it back in front, now
// that the old structures' space is free, and the file's tail is cut
// (tidy); if even that does not fit, it stays, and MetadataAfterData
// says so.

// metaChange is what a relocation changes.
type metaChange struct {
	size   int64       // new virtual size; 0 keeps it
	parent *ParentInfo // new parent link; nil keeps it (its locators are rewritten as they are)
	uuid   UUID        // the image's new identifier; the nil UUID keeps it (setuuid.go)
}

// relocate commits a metadata change as above, then tidies the layout.
// The caller guarantees no other I/O on the image while it runs.
func (s *sparse) relocate(ch metaChange) error {
	if s.img.readOnly {
		return ErrReadOnly
	}
	if err := s.flush(); err != nil {
		return err
	}
	if err := s.syncFooterCopy(); err != nil {
		return err
	}
	if ch.size != 0 && s.batmap != nil {
		// Bits past the smaller of the two disks must be clear: blocks
		// a grown disk adds start unallocated, and the checksummed part
		// of the map then sums the same for either size (batmap.go).
		if err := s.batmapClear(min(s.blocks(), (ch.size+s.blockSize-1)>>s.blockShift), 1<<62); err != nil {
			return err
		}
	}
	p, err := s.planMeta(ch, s.newMetaSpace(false), false)
	if err != nil {
		return err
	}
	if err := s.commitMeta(p); err != nil {
		return err
	}
	return s.tidyMeta()
}

// tidyMeta moves metadata a relocation left after the first block back
// in front of it, if it all fits there now, and cuts the file's tail.
func (s *sparse) tidyMeta() error {
	if !s.img.MetadataAfterData() {
		return nil
	}
	p, err := s.planMeta(metaChange{}, s.newMetaSpace(true), true)
	if errors.Is(err, errNoRoom) {
		return nil // it stays after the data: MetadataAfterData says so
	}
	if err != nil {
		return err
	}
	if err := s.commitMeta(p); err != nil {
		return err
	}
	// What the first relocation put past the end is now unused: cut it
	// (nothing the image references lies past dataEnd).
	if end := s.dataEnd(); end < s.footerOff {
		return s.cutTail(end)
	}
	return nil
}

// syncFooterCopy makes the footer copy at offset 0 the footer in force,
// if a crash between steps 3 and 4 of an earlier relocation left it
// stale: free space is judged by what the footer at the end names, and
// the copy must not name a header in it.
func (s *sparse) syncFooterCopy() error {
	raw := s.img.footerBytes()
	var cur [FooterSize]byte
	if _, err := s.f.ReadAt(cur[:], 0); err != nil {
		return ioError("read footer copy", 0, err)
	}
	if cur == raw {
		return nil
	}
	if _, err := s.f.WriteAt(raw[:], 0); err != nil {
		return s.fail(ioError("write footer copy", 0, err))
	}
	if err := s.f.Sync(); err != nil {
		return s.fail(ioError("sync", 0, err))
	}
	return nil
}

// commitMeta runs steps 2 to 4 for plan p, then makes the image in
// memory follow.
func (s *sparse) commitMeta(p *metaPlan) error {
	for _, w := range p.writes {
		if _, err := s.f.WriteAt(w.data, w.off); err != nil {
			return s.fail(ioError("write metadata", w.off, err))
		}
	}
	if err := s.f.Sync(); err != nil {
		return s.fail(ioError("sync", 0, err))
	}
	fraw := p.footer.Marshal()
	for _, off := range []int64{p.footerOff, 0} { // the end first: it commits
		if _, err := s.f.WriteAt(fraw[:], off); err != nil {
			return s.fail(ioError("write footer", off, err))
		}
		if err := s.f.Sync(); err != nil {
			return s.fail(ioError("sync", 0, err))
		}
	}
	s.adopt(p)
	return nil
}

// adopt makes the image in memory the committed plan p.
func (s *sparse) adopt(p *metaPlan) {
	s.img.footerMu.Lock()
	s.img.footer = p.footer
	s.img.footerMu.Unlock()
	s.allocMu.Lock()
	s.hdr, s.hdrOff, s.tableOff, s.footerOff = p.hdr, p.hdrOff, int64(p.hdr.TableOffset), p.footerOff
	s.allocMu.Unlock()
	s.size = int64(p.footer.CurrentSize)
	s.resizeBAT(s.blocks())
	if p.batmap != nil {
		s.batmap = p.batmap
	}
	s.setReserved(s.structSpans())
}

// resizeBAT makes the in-memory table n entries long; entries past the
// old end are unallocated.
func (s *sparse) resizeBAT(n int64) {
	for int64(len(s.bat)) < n {
		s.bat = append(s.bat, batUnused)
	}
	s.bat = s.bat[:n]
	if need := (len(s.bat) + 63) / 64; need > len(s.full) {
		s.full = append(s.full, make([]atomic.Uint64, need-len(s.full))...)
	}
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
