package vhdgen

import (
	"path"
	"slices"
	"strings"
	"unicode/utf16"
)

// refSparse is a validated dynamic header and BAT.
type refSparse struct {
	blockSize  int64
	bitmap     int64
	bat        []uint32 // the disk's blocks' entries only
	parentUUID [16]byte
	parentTime uint32
	names      []string // parent file names to try, in order
}

// span is a byte range of the file a structure occupies.
type span struct {
	off, end int64
	what     string
}

// readSparse validates the header, the locators and the BAT against the
// file: everything inside the data area, nothing overlapping.
func readSparse(f *File, ft refFooter) (*refSparse, error) {
	if ft.dataOff%SectorSize != 0 || ft.dataOff < FooterSize || ft.dataOff > uint64(ft.dataEnd-HeaderSize) {
		return nil, refuse("footer data offset %#x", ft.dataOff)
	}
	h := f.Bytes(int64(ft.dataOff), HeaderSize)
	if string(h[:8]) != "cxsparse" {
		return nil, refuse("dynamic header cookie %q", h[:8])
	}
	if Checksum(h, OffHdrChecksum) != be.Uint32(h[OffHdrChecksum:]) {
		return nil, refuse("dynamic header checksum")
	}
	if v := be.Uint32(h[OffHdrVersion:]); v>>16 != 1 {
		return nil, refuse("dynamic header version %#x", v)
	}
	sp := &refSparse{blockSize: int64(be.Uint32(h[OffHdrBlockSize:]))}
	if bs := sp.blockSize; bs < SectorSize || bs > 256<<20 || bs&(bs-1) != 0 {
		return nil, refuse("dynamic header block size %d", bs)
	}
	sp.bitmap = bitmapBytes(sp.blockSize)
	// The table must cover the current size field, even where the disk
	// is sized by its CHS (diskSize): the field says what was allocated.
	blocks := (ft.cur + sp.blockSize - 1) / sp.blockSize
	entries := int64(be.Uint32(h[OffHdrMaxEntries:]))
	if entries < blocks {
		return nil, refuse("dynamic header max table entries %d for %d blocks", entries, blocks)
	}
	tableOff := be.Uint64(h[OffHdrTableOffset:])
	if tableOff%SectorSize != 0 || tableOff > uint64(ft.dataEnd) || uint64(ft.dataEnd)-tableOff < uint64(batBytes(entries)) {
		return nil, refuse("dynamic header table offset %#x (%d entries)", tableOff, entries)
	}
	used := []span{{0, FooterSize, "footer copy"}, {int64(ft.dataOff), int64(ft.dataOff) + HeaderSize, "header"},
		{int64(tableOff), int64(tableOff) + batBytes(entries), "BAT"}}
	if ft.typ == TypeDifferencing {
		locs, err := sp.readParentLink(f, h, ft)
		if err != nil {
			return nil, err
		}
		used = append(used, locs...)
	}
	batRaw := f.Bytes(int64(tableOff), 4*blocks)
	for i := range blocks {
		e := be.Uint32(batRaw[4*i:])
		sp.bat = append(sp.bat, e)
		if e == unusedEntry {
			continue
		}
		at := int64(e) * SectorSize
		if at+sp.bitmap+sp.blockSize > ft.dataEnd {
			return nil, refuse("BAT entry %d (%#x) runs past the data area", i, e)
		}
		used = append(used, span{at, at + sp.bitmap + sp.blockSize, "block"})
	}
	return sp, overlaps(used)
}

func overlaps(used []span) error {
	slices.SortFunc(used, func(a, b span) int { return int(min(max(a.off-b.off, -1), 1)) })
	for i := 1; i < len(used); i++ {
		if used[i].off < used[i-1].end {
			return refuse("%s at %#x overlaps the %s at %#x", used[i].what, used[i].off, used[i-1].what, used[i-1].off)
		}
	}
	return nil
}

// readParentLink takes the parent's identity, its name and the
// locators' paths, validating each locator's place in the file.
func (sp *refSparse) readParentLink(f *File, h []byte, ft refFooter) ([]span, error) {
	copy(sp.parentUUID[:], h[OffHdrParentUUID:])
	sp.parentTime = be.Uint32(h[OffHdrParentTime:])
	var used []span
	for i := range LocatorCount {
		e := h[OffHdrLocators+i*LocatorSize:][:LocatorSize]
		code, space, length, off := string(e[:4]), int64(be.Uint32(e[4:])), int64(be.Uint32(e[8:])), be.Uint64(e[16:])
		if code == "\x00\x00\x00\x00" && length == 0 {
			continue
		}
		if !slices.Contains([]string{"W2ku", "W2ru", "MacX", "Mac ", "Wi2r", "Wi2k"}, code) {
			return nil, refuse("parent locator %d code %q", i, code)
		}
		if space < length {
			space *= SectorSize // the specification's unit; Windows writes bytes
		}
		if off < FooterSize || off > uint64(ft.dataEnd) || uint64(ft.dataEnd)-off < uint64(max(space, length)) {
			return nil, refuse("parent locator %d data at %#x+%d", i, off, space)
		}
		used = append(used, span{int64(off), int64(off) + max(space, length), "parent locator"})
		if name := locatorName(code, f.Bytes(int64(off), length)); name != "" {
			sp.names = append(sp.names, name)
		}
	}
	sp.names = append(sp.names, utf16Name(h[OffHdrParentName:OffHdrParentName+parentNameBytes], true))
	return used, nil
}

// locatorName is the file name a locator's path ends in.
func locatorName(code string, data []byte) string {
	var p string
	switch code {
	case "W2ku", "W2ru":
		p = utf16Name(data, false)
	case "MacX", "Wi2r", "Wi2k":
		p = strings.TrimRight(string(data), "\x00")
	default:
		return ""
	}
	return path.Base(strings.ReplaceAll(p, `\`, "/"))
}

func utf16Name(b []byte, bigEndian bool) string {
	var u []uint16
	for i := 0; i+1 < len(b); i += 2 {
		c := uint16(b[i])<<8 | uint16(b[i+1])
		if !bigEndian {
			c = uint16(b[i+1])<<8 | uint16(b[i])
		}
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// findParent opens the first candidate name that is the parent the child
// names: its UUID, its size, its timestamp (0 is accepted: Windows).
func findParent(sp *refSparse, ft refFooter, lookup Lookup, depth int) (*View, error) {
	for _, name := range sp.names {
		pf, ok := lookup(name)
		if !ok {
			continue
		}
		pft, err := readFooter(pf)
		if err != nil || pft.uuid != sp.parentUUID {
			continue
		}
		if pft.size != ft.size {
			return nil, refuse("the parent %s is %d bytes, the child %d", name, pft.size, ft.size)
		}
		if sp.parentTime != 0 && sp.parentTime != pft.time {
			return nil, refuse("the parent %s was modified after the child was made (timestamp)", name)
		}
		return decode(pf, lookup, depth+1)
	}
	return nil, refuse("no parent with the UUID the child records among %q", sp.names)
}

// read decodes the disk sector by sector: a block's bitmap bit set means
// the layer's data; clear, or no block, the parent's (zeros without one).
func (sp *refSparse) read(f *File, size int64, parent *View) ([]byte, []SectorSource) {
	raw := make([]byte, size)
	from := make([]SectorSource, size/SectorSize)
	here := make([]bool, len(from)) // stored in this layer
	for b, e := range sp.bat {
		if e == unusedEntry || int64(b)*sp.blockSize >= size {
			continue
		}
		at := int64(e) * SectorSize
		bitmap := f.Bytes(at, sp.bitmap)
		start := int64(b) * sp.blockSize
		n := min(sp.blockSize, size-start)
		data := f.Bytes(at+sp.bitmap, n)
		written := 0
		for s := range n / SectorSize {
			if bitmap[s/8]&(0x80>>(s%8)) != 0 {
				copy(raw[start+s*SectorSize:], data[s*SectorSize:(s+1)*SectorSize])
				here[start/SectorSize+s] = true
				written++
			}
		}
		for s := range n / SectorSize {
			from[start/SectorSize+s].Partial = written > 0 && int64(written) < n/SectorSize
		}
	}
	for i := range from {
		switch {
		case here[i]:
			from[i].Layer = 0
		case parent != nil:
			copy(raw[int64(i)*SectorSize:], parent.Raw[int64(i)*SectorSize:(int64(i)+1)*SectorSize])
			from[i].Layer = -1
			if parent.From[i].Layer >= 0 {
				from[i].Layer = parent.From[i].Layer + 1
			}
		default:
			from[i].Layer = -1
		}
	}
	return raw, from
}
