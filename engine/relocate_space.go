package engine

import (
	"cmp"
	"slices"
)

// Where a relocation (relocate.go) may put new metadata: in space the
// committed image does not use, before its first block (where Xen's
// vhd-util check wants every structure: it rejects an image whose block
// lies before a header, BAT, batmap or locator, "clobbers headers"), or
// failing that past the end of the file.

// metaSpace hands out room for new structures.
type metaSpace struct {
	// gaps are the free sector-aligned ranges before the first block,
	// in file order. Nothing the committed image references lies in
	// them: the old footer copy, header, BAT, batmap, locators and
	// blocks, and the footer at the end, are all outside.
	gaps []span
	// tail is where the next structure past the end of the file goes:
	// after the footer at the end, which stays valid until the commit.
	tail int64
	// frontOnly refuses room past the end (a relocation that only tidies
	// the layout is worth nothing if it cannot put everything in front).
	frontOnly bool
	// pastEnd is set once something went past the end.
	pastEnd bool
}

// firstBlock is the file offset of the first allocated block (its
// bitmap), or -1 when no block is allocated.
func (s *sparse) firstBlock() int64 {
	first := int64(-1)
	for i := range s.bat {
		if e := s.entry(int64(i)); e != batUnused && (first < 0 || int64(e)*SectorSize < first) {
			first = int64(e) * SectorSize
		}
	}
	return first
}

// newMetaSpace finds the free space of the image as it stands (committed
// and flushed).
func (s *sparse) newMetaSpace(frontOnly bool) *metaSpace {
	limit := s.footerOff
	if first := s.firstBlock(); first >= 0 {
		limit = min(limit, first)
	}
	used := s.structSpans()
	for i := range s.bat {
		if e := s.entry(int64(i)); e != batUnused {
			used = append(used, span{int64(e) * SectorSize, s.bitmapSize + s.blockSize, "block"})
		}
	}
	used = append(used, span{s.footerOff, FooterSize, "footer"})
	slices.SortFunc(used, func(a, b span) int { return cmp.Compare(a.off, b.off) })
	ms := &metaSpace{tail: alignUp(s.footerOff+FooterSize, SectorSize), frontOnly: frontOnly}
	pos := int64(FooterSize)
	for _, u := range used {
		if u.off > pos {
			ms.addGap(pos, min(u.off, limit))
		}
		pos = max(pos, u.end())
	}
	ms.addGap(pos, limit)
	return ms
}

// addGap records [from, to) as free, shrunk to whole sectors.
func (ms *metaSpace) addGap(from, to int64) {
	from, to = alignUp(from, SectorSize), to/SectorSize*SectorSize
	if to > from {
		ms.gaps = append(ms.gaps, span{from, to - from, "free"})
	}
}

// take returns room for n bytes (a multiple of the sector size): the
// first free gap before the first block that holds it, else past the
// end; ok is false when neither may be had.
func (ms *metaSpace) take(n int64) (off int64, ok bool) {
	for i, g := range ms.gaps {
		if g.len >= n {
			ms.gaps[i] = span{g.off + n, g.len - n, "free"}
			return g.off, true
		}
	}
	if ms.frontOnly {
		return 0, false
	}
	off, ms.tail, ms.pastEnd = ms.tail, ms.tail+n, true
	return off, true
}

// takeAt claims [off, off+n) if it lies in one free gap.
func (ms *metaSpace) takeAt(off, n int64) bool {
	for i, g := range ms.gaps {
		if off >= g.off && off+n <= g.end() {
			rest := []span{{g.off, off - g.off, "free"}, {off + n, g.end() - off - n, "free"}}
			ms.gaps = slices.Replace(ms.gaps, i, i+1, rest...)
			return true
		}
	}
	return false
}

// misplaced reports whether a structure at off lies after the first
// block, where vhd-util check rejects it.
func (s *sparse) misplaced(off int64) bool {
	first := s.firstBlock()
	return first >= 0 && off > first
}

// MetadataAfterData reports whether some of the image's metadata (its
// dynamic header, BAT, batmap or parent locators) lies after its first
// data block: the file is valid and vhdkit reads it, but Xen's vhd-util
// check rejects it ("clobbers headers"). A resize or set-parent leaves
// it so only when there was no room before the first block; vhd compact
// lays the image out anew.
func (img *Image) MetadataAfterData() bool {
	if img.sparse == nil {
		return false
	}
	for _, sp := range img.sparse.structSpans()[1:] {
		if img.sparse.misplaced(sp.off) {
			return true
		}
	}
	return false
}
