package engine

import (
	"encoding/binary"
	"math/bits"
)

// The dynamic disk header: 1024 bytes at the footer's data offset
// (normally 512) in dynamic and differencing images.
//
//	  0 +-------------------+ cookie "cxsparse"
//	  8 | data offset    u64| unused: all ones (0xFFFFFFFF seen too)
//	 16 | table offset   u64| file offset of the BAT
//	 24 | version        u32| 0x00010000
//	 28 | max entries    u32| BAT entries; must cover the disk
//	 32 | block size     u32| power of two, 2 MiB by default
//	 36 | checksum       u32| as the footer's, over 1024 bytes
//	 40 | parent uuid   [16]| differencing only
//	 56 | parent time    u32| parent footer timestamp (Windows may write 0)
//	 60 | reserved       u32|
//	 64 | parent name  [512]| UTF-16 big-endian
//	576 | locators   8 x 24 | see locator.go
//	768 | reserved     [256]|
//	1024+-------------------+
const (
	HeaderSize   = 1024
	headerCookie = "cxsparse"

	offHdrDataOffset  = 8
	offHdrTableOffset = 16
	offHdrVersion     = 24
	offHdrMaxEntries  = 28
	offHdrBlockSize   = 32
	offHdrChecksum    = 36
	offHdrParentUUID  = 40
	offHdrParentTime  = 56
	offHdrParentName  = 64
	offHdrLocators    = 576
	parentNameSize    = 512

	// DefaultBlockSize is the block size of new dynamic images.
	DefaultBlockSize = 2 << 20
	// MinBlockSize and MaxBlockSize bound the block sizes accepted. The
	// format allows any power of two of at least a sector; 256 MiB keeps
	// a block's bitmap (and a read-modify-write of it) small.
	MinBlockSize = SectorSize
	MaxBlockSize = 256 << 20
)

// DynamicHeader is a decoded dynamic disk header.
type DynamicHeader struct {
	DataOffset      uint64
	TableOffset     uint64
	Version         uint32
	MaxTableEntries uint32
	BlockSize       uint32
	Checksum        uint32
	ParentUUID      UUID
	ParentTimestamp uint32
	ParentName      string
	Locators        [locatorCount]Locator
}

// ParseDynamicHeader decodes and validates the 1024 bytes of a dynamic
// header read from file offset off. It checks the fields that can be
// judged alone; ParseDynamicHeader does not know the file size, so
// offsets against the file are checked by checkLayout.
func ParseDynamicHeader(b []byte, off int64) (DynamicHeader, error) {
	if len(b) != HeaderSize {
		return DynamicHeader{}, corrupt("dynamic header", "", off, "is %d bytes, want 1024", len(b))
	}
	if string(b[:8]) != headerCookie {
		return DynamicHeader{}, corrupt("dynamic header", "cookie", off, "is %q, want %q", b[:8], headerCookie)
	}
	be := binary.BigEndian
	want := be.Uint32(b[offHdrChecksum:])
	if got := checksum(b, offHdrChecksum); got != want {
		return DynamicHeader{}, corrupt("dynamic header", "checksum", off+offHdrChecksum, "is %#08x, bytes sum to %#08x", want, got)
	}
	h := DynamicHeader{
		DataOffset:      be.Uint64(b[offHdrDataOffset:]),
		TableOffset:     be.Uint64(b[offHdrTableOffset:]),
		Version:         be.Uint32(b[offHdrVersion:]),
		MaxTableEntries: be.Uint32(b[offHdrMaxEntries:]),
		BlockSize:       be.Uint32(b[offHdrBlockSize:]),
		Checksum:        want,
		ParentTimestamp: be.Uint32(b[offHdrParentTime:]),
		ParentName:      decodeUTF16(b[offHdrParentName:offHdrParentName+parentNameSize], true),
	}
	copy(h.ParentUUID[:], b[offHdrParentUUID:])
	if h.Version>>16 != 1 {
		return h, corrupt("dynamic header", "version", off+offHdrVersion, "%#08x is not version 1.x", h.Version)
	}
	if h.BlockSize < MinBlockSize || h.BlockSize > MaxBlockSize || bits.OnesCount32(h.BlockSize) != 1 {
		return h, corrupt("dynamic header", "block size", off+offHdrBlockSize, "%d is not a power of two between 512 and 256 MiB", h.BlockSize)
	}
	if h.TableOffset%SectorSize != 0 || h.TableOffset > MaxFileOffset {
		return h, corrupt("dynamic header", "table offset", off+offHdrTableOffset, "%#x is not a sector offset inside a VHD", h.TableOffset)
	}
	for i := range h.Locators {
		lo := off + offHdrLocators + int64(i*locatorSize)
		h.Locators[i] = decodeLocator(b[offHdrLocators+i*locatorSize:], lo)
	}
	return h, nil
}

// MaxFileOffset bounds every offset read from an image: nothing in a VHD
// of the largest size sits further out than this (2040 GiB of data, the
// biggest BAT, bitmaps and slack).
const MaxFileOffset = 1 << 42

// Marshal encodes the header with a fresh checksum.
func (h *DynamicHeader) Marshal() [HeaderSize]byte {
	be := binary.BigEndian
	var raw [HeaderSize]byte
	copy(raw[:], headerCookie)
	be.PutUint64(raw[offHdrDataOffset:], h.DataOffset)
	be.PutUint64(raw[offHdrTableOffset:], h.TableOffset)
	be.PutUint32(raw[offHdrVersion:], h.Version)
	be.PutUint32(raw[offHdrMaxEntries:], h.MaxTableEntries)
	be.PutUint32(raw[offHdrBlockSize:], h.BlockSize)
	copy(raw[offHdrParentUUID:], h.ParentUUID[:])
	be.PutUint32(raw[offHdrParentTime:], h.ParentTimestamp)
	encodeUTF16(raw[offHdrParentName:offHdrParentName+parentNameSize], h.ParentName, true)
	for i, l := range h.Locators {
		l.encode(raw[offHdrLocators+i*locatorSize:])
	}
	h.Checksum = checksum(raw[:], offHdrChecksum)
	be.PutUint32(raw[offHdrChecksum:], h.Checksum)
	return raw
}

// batBytes is the BAT's size in the file: 4 bytes an entry, padded to a
// whole sector.
func batBytes(entries uint32) int64 {
	return alignUp(int64(entries)*4, SectorSize)
}

// bitmapBytes is the size of a block's sector bitmap in the file: one bit
// per sector, padded to a whole sector.
func bitmapBytes(blockSize uint32) int64 {
	return alignUp(int64(blockSize/SectorSize+7)/8, SectorSize)
}

func alignUp(v, a int64) int64 { return (v + a - 1) / a * a }
