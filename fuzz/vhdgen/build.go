package vhdgen

// Layout is where Build put a sparse image's structures: what mutations
// aim at.
type Layout struct {
	TableOffset int64
	Entries     int64
	// BlockAt is the file offset of each allocated block's bitmap, by
	// block index.
	BlockAt map[int]int64
	// LocatorAt is the file offset of each locator's data.
	LocatorAt []int64
}

// Build makes the files of layers (top first; each differencing layer's
// parent is the next one).
func Build(layers []Layer) ([]*File, []Layout) {
	files := make([]*File, len(layers))
	lays := make([]Layout, len(layers))
	for i := range layers {
		var parent *Layer
		if i+1 < len(layers) {
			parent = &layers[i+1]
		}
		files[i], lays[i] = buildLayer(&layers[i], parent)
	}
	return files, lays
}

func buildLayer(l *Layer, parent *Layer) (*File, Layout) {
	f := NewFile()
	if !l.sparse() {
		writeData(f, l, 0, 0, l.Size)
		ft := footer(l, ^uint64(0))
		if l.Short {
			ft = ft[:FooterSize-1]
		}
		f.WriteAt(ft, l.Size)
		return f, Layout{}
	}
	lay := Layout{TableOffset: 3 * SectorSize, Entries: l.blockCount() + int64(l.ExtraEntries), BlockAt: map[int]int64{}}
	next := lay.TableOffset + batBytes(lay.Entries)
	// Locator data: a sector each (or more), after the BAT.
	var locs [][]byte
	for _, code := range l.Locators {
		p := locatorPath(code, parent.Name)
		locs = append(locs, p)
		lay.LocatorAt = append(lay.LocatorAt, next)
		f.WriteAt(p, next)
		next += (int64(len(p)) + SectorSize - 1) / SectorSize * SectorSize
	}
	bat := make([]byte, batBytes(lay.Entries))
	for i := range bat {
		bat[i] = 0xFF
	}
	bm := bitmapBytes(l.BlockSize)
	for _, b := range l.Blocks {
		lay.BlockAt[b] = next
		be.PutUint32(bat[4*b:], uint32(next/SectorSize))
		writeBlock(f, l, b, next, bm)
		next += bm + l.BlockSize
	}
	f.WriteAt(bat, lay.TableOffset)
	f.WriteAt(header(l, parent, lay, locs), FooterSize)
	ft := footer(l, FooterSize)
	f.WriteAt(ft, 0)
	f.WriteAt(ft, next)
	return f, lay
}

// writeBlock writes block b's bitmap at at and its data after it.
func writeBlock(f *File, l *Layer, b int, at, bm int64) {
	bitmap := make([]byte, bm)
	first := int64(b) * l.BlockSize / SectorSize
	for s := int64(0); s < l.BlockSize/SectorSize; s++ {
		if l.IsWritten(first + s) {
			bitmap[s/8] |= 0x80 >> (s % 8)
		}
	}
	f.WriteAt(bitmap, at)
	end := min(int64(b+1)*l.BlockSize, l.Size)
	writeData(f, l, at+bm-int64(b)*l.BlockSize, int64(b)*l.BlockSize, end)
}

// writeData writes the layer's sectors in [from, to) of the disk at file
// offset base+disk offset.
func writeData(f *File, l *Layer, base, from, to int64) {
	sec := make([]byte, SectorSize)
	for off := from; off < to; off += SectorSize {
		switch {
		case l.IsWritten(off / SectorSize):
			for i := range sec {
				sec[i] = Pattern(l.Salt, off+int64(i))
			}
		case l.Junk && l.Type == TypeDifferencing:
			for i := range sec {
				sec[i] = junkByte(l.Salt, off+int64(i))
			}
		default:
			continue
		}
		f.WriteAt(sec, base+off)
	}
}

func footer(l *Layer, dataOffset uint64) []byte {
	b := make([]byte, FooterSize)
	copy(b, "conectix")
	be.PutUint32(b[OffFooterFeatures:], 2)
	be.PutUint32(b[OffFooterVersion:], formatVersion)
	be.PutUint64(b[OffFooterDataOffset:], dataOffset)
	be.PutUint32(b[OffFooterTimestamp:], l.Timestamp)
	copy(b[OffFooterCreatorApp:OffFooterCreatorApp+4], l.Creator)
	be.PutUint32(b[OffFooterCreatorVer:], 0x00010000)
	copy(b[OffFooterCreatorOS:OffFooterCreatorOS+4], l.HostOS)
	be.PutUint64(b[OffFooterOrigSize:], uint64(l.Size))
	be.PutUint64(b[OffFooterCurSize:], uint64(l.Size))
	be.PutUint32(b[OffFooterGeometry:], l.Geometry.encode())
	be.PutUint32(b[OffFooterDiskType:], uint32(l.Type))
	copy(b[OffFooterUUID:], l.UUID[:])
	SetChecksum(b, OffFooterChecksum)
	return b
}

func header(l *Layer, parent *Layer, lay Layout, locs [][]byte) []byte {
	h := make([]byte, HeaderSize)
	copy(h, "cxsparse")
	be.PutUint64(h[OffHdrDataOffset:], ^uint64(0))
	be.PutUint64(h[OffHdrTableOffset:], uint64(lay.TableOffset))
	be.PutUint32(h[OffHdrVersion:], formatVersion)
	be.PutUint32(h[OffHdrMaxEntries:], uint32(lay.Entries))
	be.PutUint32(h[OffHdrBlockSize:], uint32(l.BlockSize))
	if l.Type == TypeDifferencing {
		copy(h[OffHdrParentUUID:], parent.UUID[:])
		if !l.ParentTimeZero {
			be.PutUint32(h[OffHdrParentTime:], parent.Timestamp)
		}
		copy(h[OffHdrParentName:OffHdrParentName+parentNameBytes], utf16BE(parent.Name))
		for i, code := range l.Locators {
			e := h[OffHdrLocators+i*LocatorSize:]
			copy(e[:4], code)
			space := (int64(len(locs[i])) + SectorSize - 1) / SectorSize * SectorSize
			be.PutUint32(e[4:], uint32(space))
			be.PutUint32(e[8:], uint32(len(locs[i])))
			be.PutUint64(e[16:], uint64(lay.LocatorAt[i]))
		}
	}
	SetChecksum(h, OffHdrChecksum)
	return h
}
