package vhdgen

import "encoding/binary"

// The VHD format's layout, from the specification (Virtual Hard Disk
// Image Format Specification, 2006). Integers are big-endian.
const (
	SectorSize = 512
	FooterSize = 512
	HeaderSize = 1024
	// MaxDiskSize is the largest disk the format allows (2040 GiB).
	MaxDiskSize = 0xFF000000 * SectorSize

	// Footer fields.
	OffFooterFeatures   = 8
	OffFooterVersion    = 12
	OffFooterDataOffset = 16
	OffFooterTimestamp  = 24
	OffFooterCreatorApp = 28
	OffFooterCreatorVer = 32
	OffFooterCreatorOS  = 36
	OffFooterOrigSize   = 40
	OffFooterCurSize    = 48
	OffFooterGeometry   = 56
	OffFooterDiskType   = 60
	OffFooterChecksum   = 64
	OffFooterUUID       = 68

	// Dynamic header fields.
	OffHdrDataOffset  = 8
	OffHdrTableOffset = 16
	OffHdrVersion     = 24
	OffHdrMaxEntries  = 28
	OffHdrBlockSize   = 32
	OffHdrChecksum    = 36
	OffHdrParentUUID  = 40
	OffHdrParentTime  = 56
	OffHdrParentName  = 64
	OffHdrLocators    = 576
	LocatorSize       = 24
	LocatorCount      = 8
	parentNameBytes   = 512

	// Disk types.
	TypeFixed        = 2
	TypeDynamic      = 3
	TypeDifferencing = 4

	formatVersion = 0x00010000
	// unusedEntry marks a BAT entry with no block.
	unusedEntry = 0xFFFFFFFF
)

var be = binary.BigEndian

// Checksum is the one's complement of the byte sum of s, the 4 bytes at
// at (the checksum field itself) left out.
func Checksum(s []byte, at int) uint32 {
	var sum uint32
	for i, c := range s {
		if i < at || i >= at+4 {
			sum += uint32(c)
		}
	}
	return ^sum
}

// SetChecksum stores s's checksum in its field at at.
func SetChecksum(s []byte, at int) { be.PutUint32(s[at:], Checksum(s, at)) }

// FixChecksums returns a copy of b with the checksums of the footer at the
// end, the copy at offset 0 and the dynamic header they point at made
// right, so mutations of their fields get past the checksum and reach the
// code that validates them (the fuzz targets' fix flag).
func FixChecksums(b []byte) []byte {
	b = append([]byte(nil), b...)
	var dataOff uint64 = 1<<64 - 1
	for _, off := range []int{len(b) - FooterSize, 0} {
		if off < 0 || len(b) < off+FooterSize || string(b[off:off+8]) != "conectix" {
			continue
		}
		SetChecksum(b[off:off+FooterSize], OffFooterChecksum)
		if d := be.Uint64(b[off+OffFooterDataOffset:]); dataOff == 1<<64-1 {
			dataOff = d
		}
	}
	if dataOff <= uint64(len(b)) && uint64(len(b))-dataOff >= HeaderSize {
		h := b[dataOff : dataOff+HeaderSize]
		if string(h[:8]) == "cxsparse" {
			SetChecksum(h, OffHdrChecksum)
		}
	}
	return b
}

// Geometry is a CHS geometry as the footer stores it.
type Geometry struct {
	Cylinders uint16
	Heads     uint8
	Sectors   uint8
}

func (g Geometry) encode() uint32 {
	return uint32(g.Cylinders)<<16 | uint32(g.Heads)<<8 | uint32(g.Sectors)
}

// Bytes is the size the geometry describes.
func (g Geometry) Bytes() int64 {
	return int64(g.Cylinders) * int64(g.Heads) * int64(g.Sectors) * SectorSize
}

// GeometryFor is the specification's CHS algorithm (its appendix).
func GeometryFor(size int64) Geometry {
	total := min(size/SectorSize, 65535*16*255)
	var spt, heads, cth int64
	if total >= 65535*16*63 {
		spt, heads = 255, 16
		cth = total / spt
	} else {
		spt = 17
		cth = total / spt
		heads = max((cth+1023)/1024, 4)
		if cth >= heads*1024 || heads > 16 {
			spt, heads = 31, 16
			cth = total / spt
		}
		if cth >= heads*1024 {
			spt, heads = 63, 16
			cth = total / spt
		}
	}
	return Geometry{uint16(cth / heads), uint8(heads), uint8(spt)}
}

// bitmapBytes is the size of a block's sector bitmap in the file: a bit
// per sector, padded to a sector.
func bitmapBytes(blockSize int64) int64 {
	return ((blockSize/SectorSize+7)/8 + SectorSize - 1) / SectorSize * SectorSize
}

// batBytes is the size of a BAT of n entries in the file.
func batBytes(n int64) int64 { return (4*n + SectorSize - 1) / SectorSize * SectorSize }
