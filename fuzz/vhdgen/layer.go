package vhdgen

import (
	"encoding/binary"
	"unicode/utf16"
)

// Layer specifies one image file of a case. Its bytes follow from the
// fields alone (Build), so a case stored in a report rebuilds exactly.
type Layer struct {
	Name      string `json:"name"`
	Type      int    `json:"type"` // TypeFixed, TypeDynamic or TypeDifferencing
	Size      int64  `json:"size"`
	BlockSize int64  `json:"block_size,omitempty"`
	// Creator and HostOS are the footer's creator application and host
	// OS (4 bytes each); Geometry is the CHS stored, which may not be the
	// specification's for Size (a quirk some readers size the disk by).
	Creator  string   `json:"creator"`
	HostOS   string   `json:"host_os"`
	Geometry Geometry `json:"geometry"`
	// Short leaves the last (reserved) byte of a fixed image's footer
	// off: pre-2004 Virtual PC wrote 511-byte footers.
	Short bool `json:"short_footer,omitempty"`
	// Salt picks the layer's data pattern (Pattern).
	Salt uint32 `json:"salt"`
	// Written has a bit per disk sector (MSB first): the sectors this
	// layer stores. A sparse layer stores only sectors of its allocated
	// blocks.
	Written []byte `json:"written"`
	// Blocks are the allocated blocks in file order (shuffled when the
	// order is not ascending).
	Blocks []int `json:"blocks,omitempty"`
	// ExtraEntries are BAT entries past the disk's last block (unused).
	ExtraEntries int `json:"extra_entries,omitempty"`
	// Locators are the codes of the parent locators, in entry order.
	Locators []string `json:"locators,omitempty"`
	// Junk fills the unwritten sectors of allocated differencing blocks
	// with bytes that are not the parent's (a reader must take the
	// parent's, by the bitmap).
	Junk bool `json:"junk,omitempty"`
	// ParentTimeZero records 0 as the parent's timestamp (as Windows
	// does) instead of the parent footer's.
	ParentTimeZero bool     `json:"parent_time_zero,omitempty"`
	UUID           [16]byte `json:"uuid"`
	Timestamp      uint32   `json:"timestamp"`
}

// IsWritten reports whether the layer stores sector s.
func (l *Layer) IsWritten(s int64) bool {
	return s/8 < int64(len(l.Written)) && l.Written[s/8]&(0x80>>(s%8)) != 0
}

// SetWritten marks sector s stored or not.
func (l *Layer) SetWritten(s int64, on bool) {
	for int64(len(l.Written)) <= s/8 {
		l.Written = append(l.Written, 0)
	}
	if on {
		l.Written[s/8] |= 0x80 >> (s % 8)
	} else {
		l.Written[s/8] &^= 0x80 >> (s % 8)
	}
}

// Pattern is the byte a layer with salt stores at disk offset off: every
// sector differs from its neighbours and from other layers' sectors.
func Pattern(salt uint32, off int64) byte {
	x := (uint32(off/SectorSize)+1)*2654435761 ^ salt*40503
	return byte(x>>24) ^ byte(off) | 1
}

// junkByte is what Junk puts in unwritten sectors: not any layer's data.
func junkByte(salt uint32, off int64) byte { return Pattern(salt^0x6a756e6b, off) &^ 1 }

func (l *Layer) blockCount() int64 { return (l.Size + l.BlockSize - 1) / l.BlockSize }

func (l *Layer) sparse() bool { return l.Type != TypeFixed }

// locatorPath is the path a locator of code holds to the parent file
// named name: only the name in the child's folder reaches it here (the
// absolute ones point nowhere on purpose: a reader must fall back).
func locatorPath(code, name string) []byte {
	switch code {
	case "W2ku":
		return utf16LE(`C:\vhdgen\` + name)
	case "W2ru":
		return utf16LE(`.\` + name)
	case "MacX":
		return []byte("file:///vhdgen/" + name)
	default: // Wi2r, Wi2k: deprecated, ASCII
		return []byte(`.\` + name)
	}
}

func utf16LE(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func utf16BE(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		be.PutUint16(b[2*i:], c)
	}
	return b
}
