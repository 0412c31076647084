package vhdgen

// SectorReader decodes a disk from an image's bytes, given the layout
// the image declares, sector by sector and independently of any
// reader's block logic: a fixed disk is the file; a sparse one is looked
// up in the BAT and the bitmaps byte by byte. A clear bit means absent,
// in dynamic images too, whatever the data area holds (vhdkit's
// crash-view rule). The fuzz targets use it to check reads of images
// that passed validation; Decode is the whole decoder, validation
// included.
type SectorReader struct {
	Data        []byte
	Fixed       bool
	BlockSize   int64
	TableOffset int64
	// Absent is the byte at disk offset off where the image stores
	// nothing: 0, or the parent's.
	Absent func(off int64) byte
}

// Read fills p with what the disk holds at off.
func (r *SectorReader) Read(p []byte, off int64) {
	if r.Fixed {
		copy(p, r.Data[off:])
		return
	}
	bm := bitmapBytes(r.BlockSize)
	for len(p) > 0 {
		n := min(int64(len(p)), SectorSize-off%SectorSize) // to the end of the sector
		b, in := off/r.BlockSize, off%r.BlockSize
		e := be.Uint32(r.Data[r.TableOffset+4*b:])
		at := int64(e) * SectorSize
		sec := in / SectorSize
		if e == unusedEntry || r.Data[at+sec/8]&(0x80>>(sec%8)) == 0 {
			r.FillAbsent(p[:n], off)
		} else {
			copy(p[:n], r.Data[at+bm+in:])
		}
		p, off = p[n:], off+n
	}
}

// FillAbsent fills p with what the disk holds at off where no layer
// stores data.
func (r *SectorReader) FillAbsent(p []byte, off int64) {
	for i := range p {
		p[i] = 0
		if r.Absent != nil {
			p[i] = r.Absent(off + int64(i))
		}
	}
}
