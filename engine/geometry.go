package engine

import "fmt"

// Sizes fixed by the format.
const (
	SectorSize = 512
	// MaxSize is the largest disk the format allows: 0xFF000000 sectors,
	// 2040 GiB.
	MaxSize = 0xFF000000 * SectorSize
)

// Geometry is a disk's CHS geometry as the footer stores it.
type Geometry struct {
	Cylinders       uint16
	Heads           uint8
	SectorsPerTrack uint8
}

func decodeGeometry(v uint32) Geometry {
	return Geometry{Cylinders: uint16(v >> 16), Heads: uint8(v >> 8), SectorsPerTrack: uint8(v)}
}

func (g Geometry) encode() uint32 {
	return uint32(g.Cylinders)<<16 | uint32(g.Heads)<<8 | uint32(g.SectorsPerTrack)
}

// Bytes is the size the geometry describes.
func (g Geometry) Bytes() int64 {
	return int64(g.Cylinders) * int64(g.Heads) * int64(g.SectorsPerTrack) * SectorSize
}

func (g Geometry) String() string {
	return fmt.Sprintf("%d/%d/%d", g.Cylinders, g.Heads, g.SectorsPerTrack)
}

// maxCHSSectors is the largest disk CHS can describe: 65535 x 16 x 255.
const maxCHSSectors = 65535 * 16 * 255

// GeometryFor computes the CHS geometry of a disk of size bytes by the
// algorithm in the VHD specification's appendix. The product is at most
// size: CHS cannot describe most sizes exactly.
func GeometryFor(size int64) Geometry {
	total := size / SectorSize
	if total > maxCHSSectors {
		total = maxCHSSectors
	}
	var spt, heads, cylTimesHeads int64
	if total >= 65535*16*63 {
		spt, heads = 255, 16
		cylTimesHeads = total / spt
	} else {
		spt = 17
		cylTimesHeads = total / spt
		heads = (cylTimesHeads + 1023) / 1024
		if heads < 4 {
			heads = 4
		}
		if cylTimesHeads >= heads*1024 || heads > 16 {
			spt, heads = 31, 16
			cylTimesHeads = total / spt
		}
		if cylTimesHeads >= heads*1024 {
			spt, heads = 63, 16
			cylTimesHeads = total / spt
		}
	}
	return Geometry{Cylinders: uint16(cylTimesHeads / heads), Heads: uint8(heads), SectorsPerTrack: uint8(spt)}
}
