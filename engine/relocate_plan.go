package engine

import (
	"errors"
	"fmt"
)

// Planning a relocation (relocate.go): the new header, BAT, batmap and
// locators, where each goes (relocate_space.go), and the writes that put
// them there. Nothing is written while planning.

// errNoRoom: a relocation that may use only the space before the first
// block (tidyMeta) does not fit there.
var errNoRoom = errors.New("vhd: the metadata does not fit before the first block")

// metaPlan is a relocation ready to commit.
type metaPlan struct {
	footer    Footer
	footerOff int64 // where the new footer goes: the end of the file
	hdr       DynamicHeader
	hdrOff    int64
	// writes put the new structures in free space (or, for a BAT
	// staying put, into its entries past the old disk's end, which the
	// old image does not read).
	writes []pendingWrite
	// batmap is blktap's batmap as committed, nil when it does not change.
	batmap *batmapState
}

// planMeta plans change ch; with tidy it also moves every structure that
// lies after the first block (and ms then offers only space in front).
func (s *sparse) planMeta(ch metaChange, ms *metaSpace, tidy bool) (*metaPlan, error) {
	p := &metaPlan{hdr: s.hdr, footer: s.img.Footer()}
	newSize := s.size
	if ch.size != 0 {
		newSize = ch.size
		setSize(&p.footer, ch.size)
	}
	if !ch.uuid.IsZero() {
		p.footer.UUID = ch.uuid
	}
	entries := (newSize + s.blockSize - 1) >> s.blockShift
	if entries > int64(batUnused) {
		return nil, errors.New("vhd: too many blocks")
	}
	if err := s.planBAT(p, ms, entries, newSize, tidy); err != nil {
		return nil, err
	}
	if err := s.planLocators(p, ms, ch.parent, tidy); err != nil {
		return nil, err
	}
	off, ok := ms.take(HeaderSize)
	if !ok {
		return nil, errNoRoom
	}
	p.hdrOff = off
	hraw := p.hdr.Marshal()
	p.writes = append(p.writes, pendingWrite{off, hraw[:]})
	p.footer.DataOffset = uint64(off)
	p.footerOff = s.footerOff
	if ms.pastEnd {
		p.footerOff = ms.tail
	}
	return p, nil
}

// planBAT keeps the BAT where it is when it is big enough or can grow in
// place (into free space after it, or into the padding of its last
// sector), and moves it otherwise, with blktap's batmap, whose header
// must follow it.
func (s *sparse) planBAT(p *metaPlan, ms *metaSpace, entries, newSize int64, tidy bool) error {
	oldMax := int64(s.hdr.MaxTableEntries)
	newMax := max(oldMax, entries)
	bm := s.batmap
	move := tidy && s.batMisplaced()
	if bm != nil && bm.trusted() && bm.hdr.MapBytes() < s.batmapNeedFor(newSize, newMax) {
		move = true // the map cannot grow where it is: a new one goes with a new BAT
	}
	if !move && newMax > oldMax {
		grow := batBytes(uint32(newMax)) - batBytes(uint32(oldMax))
		// With a batmap, whose header sits right after the BAT, the
		// table may grow only within its last sector's padding.
		move = grow > 0 && (bm != nil || !ms.takeAt(s.tableOff+batBytes(uint32(oldMax)), grow))
	}
	if move {
		return s.planMovedBAT(p, ms, newMax, newSize)
	}
	p.hdr.MaxTableEntries = uint32(newMax)
	if old := s.blocks(); entries > old {
		// Entries the old disk did not reach become part of the disk:
		// write them unallocated, whatever the file held there.
		p.writes = append(p.writes, s.batSectors(s.tableOff, old, entries, newMax))
	}
	if bm != nil && bm.trusted() {
		return s.planKeptBatmap(p, newSize, newMax)
	}
	return nil
}

// batMisplaced reports whether the BAT, or blktap's batmap after it, lies
// after the first block.
func (s *sparse) batMisplaced() bool {
	if s.misplaced(s.tableOff) {
		return true
	}
	bm := s.batmap
	return bm != nil && bm.found && (s.misplaced(bm.hdrOff) || s.misplaced(int64(bm.hdr.MapOffset)))
}

// batSectors encodes the sectors of the BAT at table (of maxEntries)
// that hold entries [from, to), from memory; entries past the disk's
// blocks are unallocated.
func (s *sparse) batSectors(table, from, to, maxEntries int64) pendingWrite {
	first := from * 4 / SectorSize * SectorSize
	last := min(alignUp(to*4, SectorSize), batBytes(uint32(maxEntries)))
	buf := make([]byte, last-first)
	for i := range int64(len(buf)) / 4 {
		e := uint32(batUnused)
		if k := first/4 + i; k < int64(len(s.bat)) {
			e = s.entry(k)
		}
		buf[4*i], buf[4*i+1], buf[4*i+2], buf[4*i+3] = byte(e>>24), byte(e>>16), byte(e>>8), byte(e)
	}
	return pendingWrite{table + first, buf}
}

// planMovedBAT puts a new BAT of newMax entries (and blktap's batmap
// right after it) in free space.
func (s *sparse) planMovedBAT(p *metaPlan, ms *metaSpace, newMax, newSize int64) error {
	size := batBytes(uint32(newMax))
	var nb *batmapState
	if s.batmap != nil {
		nb = s.newBatmapFor(newSize, newMax)
		size += BatmapHeaderSize + nb.hdr.MapBytes()
	}
	off, ok := ms.take(size)
	if !ok {
		return errNoRoom
	}
	p.hdr.TableOffset, p.hdr.MaxTableEntries = uint64(off), uint32(newMax)
	p.writes = append(p.writes, s.batSectors(off, 0, newMax, newMax))
	if nb != nil {
		nb.hdrOff = off + batBytes(uint32(newMax))
		nb.hdr.MapOffset = uint64(nb.hdrOff + BatmapHeaderSize)
		nb.hdr.Checksum = batmapChecksum(nb.bits[:batmapSumBytes(uint64(newSize))], nb.hdr.Version)
		m := make([]byte, nb.hdr.MapBytes())
		copy(m, nb.bits)
		hraw := nb.hdr.Marshal()
		p.writes = append(p.writes, pendingWrite{nb.hdrOff, hraw[:]}, pendingWrite{int64(nb.hdr.MapOffset), m})
		p.batmap = nb
	}
	return nil
}

// batmapNeedFor is batmapNeed for a disk of size bytes and a table of
// maxEntries.
func (s *sparse) batmapNeedFor(size, maxEntries int64) int64 {
	blocks := (size + s.blockSize - 1) >> s.blockShift
	return max(batmapSumBytes(uint64(size)), alignUp((blocks+7)/8, SectorSize), int64(batmapMapSectors(uint32(maxEntries)))*SectorSize)
}

// newBatmapFor is the batmap a moved BAT takes: the old bits of the
// blocks both disks have when blktap trusted them (clear otherwise), the
// old marker and keyhash, room for a bit per entry.
func (s *sparse) newBatmapFor(newSize, newMax int64) *batmapState {
	old := s.batmap
	need := s.batmapNeedFor(newSize, newMax)
	nb := &batmapState{found: true, bits: make([]byte, need)}
	nb.hdr = BatmapHeader{MapSize: uint32(need / SectorSize), Version: batmapVersion}
	if old.found {
		nb.hdr.Marker, nb.hdr.Keyhash = old.hdr.Marker, old.hdr.Keyhash
	}
	if old.trusted() {
		copy(nb.bits, old.bits[:min(int64(len(old.bits)), (min(s.blocks(), (newSize+s.blockSize-1)>>s.blockShift)+7)/8)])
		if old.hdr.Version == batmapVersion11 {
			nb.hdr.Version = batmapVersion11
		}
	}
	return nb
}

// planKeptBatmap keeps blktap's batmap where it is, for a BAT that stays.
// Its bits past the smaller disk are clear (relocate cleared them), so
// its checksum holds for either size; the part of the map a grown disk
// newly reads is written as zeros, whatever the file held there (the
// old disk never read it).
func (s *sparse) planKeptBatmap(p *metaPlan, newSize, newMax int64) error {
	old := s.batmap
	need := max(s.batmapNeedFor(newSize, newMax), int64(len(old.bits)))
	nb := &batmapState{hdrOff: old.hdrOff, hdr: old.hdr, found: true, bits: make([]byte, need)}
	copy(nb.bits, old.bits)
	if extra := need - int64(len(old.bits)); extra > 0 {
		p.writes = append(p.writes, pendingWrite{int64(old.hdr.MapOffset) + int64(len(old.bits)), make([]byte, extra)})
	}
	if got := batmapChecksum(nb.bits[:batmapSumBytes(uint64(newSize))], nb.hdr.Version); got != nb.hdr.Checksum {
		return fmt.Errorf("vhd: blktap's batmap would not sum to its checksum for the new size (%#x, want %#x); run vhd repair first", got, nb.hdr.Checksum)
	}
	p.batmap = nb
	return nil
}

// planLocators places the locator data: all of it anew for a new parent
// link; otherwise only, when tidying, the locators after the first block.
func (s *sparse) planLocators(p *metaPlan, ms *metaSpace, parent *ParentInfo, tidy bool) error {
	var datas [locatorCount][]byte
	if parent != nil {
		p.hdr.ParentUUID, p.hdr.ParentTimestamp, p.hdr.ParentName = parent.UUID, parent.Timestamp, parent.Name
		p.hdr.Locators = [locatorCount]Locator{}
		for i, lp := range parent.Locators {
			d := EncodeLocatorPath(lp.Code, lp.Path)
			if d == nil || len(d) > maxLocatorLen || i >= locatorCount {
				return fmt.Errorf("vhd: cannot store parent locator %q for %q", lp.Code, lp.Path)
			}
			copy(p.hdr.Locators[i].Code[:], lp.Code)
			datas[i] = d
		}
	} else if tidy {
		for i, l := range s.hdr.Locators {
			if l.Empty() || !s.misplaced(int64(l.DataOffset)) {
				continue
			}
			datas[i] = make([]byte, l.DataLength)
			if err := s.pread(datas[i], int64(l.DataOffset)); err != nil {
				return err
			}
		}
	}
	for i, d := range datas {
		if d == nil {
			continue
		}
		space := max(alignUp(int64(len(d)), SectorSize), SectorSize)
		off, ok := ms.take(space)
		if !ok {
			return errNoRoom
		}
		l := &p.hdr.Locators[i]
		l.DataOffset, l.DataLength, l.DataSpace = uint64(off), uint32(len(d)), uint32(space)
		buf := make([]byte, space)
		copy(buf, d)
		p.writes = append(p.writes, pendingWrite{off, buf})
	}
	return nil
}
