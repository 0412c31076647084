package engine

import (
	"encoding/binary"
	"fmt"
)

// blktap's batmap: Xen's blktap (vhd-util, tapdisk) keeps, in the images
// it makes, a bitmap with one bit per block, set when every sector of the
// block is present. libvhd trusts a set bit: a write into such a block
// goes straight to the data and skips the sector bitmap, and tapdisk
// reads it without looking at the bitmap. So a set bit over a block that
// is not full loses writes (they never reach the bitmap) and shows stale
// data; a clear bit only costs blktap a bitmap update. The engine never
// sets a bit, and clears a block's bit, durably, before anything makes
// the block not full (batmap_image.go).
//
// Which images have one (libvhd's vhd_has_batmap): dynamic and
// differencing images whose creator application starts with "tap" and
// whose creator version is 1.2 or later; at version 1.1, those whose
// batmap header reads as one. The dynamic header does not declare it:
// its header is the sector right after the BAT (table offset plus the
// BAT's size for max table entries, padded to a sector), and its map
// lies wherever the header says (blktap puts it right after).
//
//	  0 +-------------------+ cookie "tdbatmap"
//	  8 | map offset     u64| file offset of the map, a sector offset
//	 16 | map size       u32| sectors the map may use
//	 20 | version        u32| 0x00010002 (1.1 summed the map's bytes signed)
//	 24 | checksum       u32| ^(byte sum of the map's checksummed part)
//	 28 | marker          u8| a flag Xen's tools set; kept as read
//	 29 | keyhash       [65]| cookie, nonce, SHA-256 of an encryption key; kept
//	 94 | reserved     [418]| zero
//	512 +-------------------+
//
// The map: bit b (MSB first, as in sector bitmaps) is block b's. The
// checksum covers the first batmapSumBytes(current size) bytes of the
// map, a count libvhd derives from the disk size assuming 2 MiB blocks,
// so it changes only when the size crosses a multiple of 8 GiB.
const (
	BatmapHeaderSize = SectorSize
	batmapCookie     = "tdbatmap"

	offBatmapOffset   = 8
	offBatmapSize     = 16
	offBatmapVersion  = 20
	offBatmapChecksum = 24
	offBatmapMarker   = 28
	offBatmapKeyhash  = 29
	batmapKeyhashSize = 65

	// batmapVersion is the version blktap writes; 1.1 summed the map's
	// bytes as signed chars.
	batmapVersion   = 0x00010002
	batmapVersion11 = 0x00010001

	// maxBatmapSectors bounds the map: a bit for each of 2^32 blocks.
	maxBatmapSectors = 1 << 20
)

// BatmapHeader is a decoded batmap header.
type BatmapHeader struct {
	MapOffset uint64
	MapSize   uint32 // sectors
	Version   uint32
	Checksum  uint32
	Marker    uint8
	Keyhash   [batmapKeyhashSize]byte
}

// ParseBatmapHeader decodes and validates the 512 bytes of a batmap
// header read from file offset off: the cookie, a version blktap reads
// (1.x up to 1.2), a sector-aligned map offset past the footer copy and a
// map size between one sector and a bit per 2^32 blocks. Where the map
// lies against the file and the BAT is checked by the caller, which
// knows them.
func ParseBatmapHeader(b []byte, off int64) (BatmapHeader, error) {
	if len(b) != BatmapHeaderSize {
		return BatmapHeader{}, corrupt("batmap", "", off, "header is %d bytes, want 512", len(b))
	}
	if string(b[:8]) != batmapCookie {
		return BatmapHeader{}, corrupt("batmap", "cookie", off, "is %q, want %q", b[:8], batmapCookie)
	}
	be := binary.BigEndian
	h := BatmapHeader{
		MapOffset: be.Uint64(b[offBatmapOffset:]),
		MapSize:   be.Uint32(b[offBatmapSize:]),
		Version:   be.Uint32(b[offBatmapVersion:]),
		Checksum:  be.Uint32(b[offBatmapChecksum:]),
		Marker:    b[offBatmapMarker],
	}
	copy(h.Keyhash[:], b[offBatmapKeyhash:])
	if h.Version>>16 != 1 || h.Version > batmapVersion {
		return h, corrupt("batmap", "version", off+offBatmapVersion, "%#08x is not a version blktap reads (1.0 to 1.2)", h.Version)
	}
	if h.MapOffset < FooterSize || h.MapOffset%SectorSize != 0 || h.MapOffset > MaxFileOffset {
		return h, corrupt("batmap", "map offset", off+offBatmapOffset, "%#x is not a sector offset inside a VHD", h.MapOffset)
	}
	if h.MapSize == 0 || h.MapSize > maxBatmapSectors {
		return h, corrupt("batmap", "map size", off+offBatmapSize, "%d sectors is not between 1 and %d", h.MapSize, maxBatmapSectors)
	}
	return h, nil
}

// Marshal encodes the header (the checksum as it stands: see
// batmapChecksum); the reserved bytes are zero, as libvhd writes them.
func (h *BatmapHeader) Marshal() [BatmapHeaderSize]byte {
	be := binary.BigEndian
	var raw [BatmapHeaderSize]byte
	copy(raw[:], batmapCookie)
	be.PutUint64(raw[offBatmapOffset:], h.MapOffset)
	be.PutUint32(raw[offBatmapSize:], h.MapSize)
	be.PutUint32(raw[offBatmapVersion:], h.Version)
	be.PutUint32(raw[offBatmapChecksum:], h.Checksum)
	raw[offBatmapMarker] = h.Marker
	copy(raw[offBatmapKeyhash:], h.Keyhash[:])
	return raw
}

// MapBytes is the room the header gives the map, in bytes.
func (h *BatmapHeader) MapBytes() int64 { return int64(h.MapSize) * SectorSize }

// batmapSumBytes is how many bytes of the map the checksum covers for a
// disk of curSize bytes: libvhd's secs_round_up_no_zero(curSize >> 24)
// sectors (a bit per 2 MiB block, whatever the block size).
func batmapSumBytes(curSize uint64) int64 {
	return max(1, (int64(curSize>>24)+SectorSize-1)/SectorSize) * SectorSize
}

// batmapMapSectors is the map size blktap gives a table of entries
// blocks: a bit each, in whole sectors, at least one.
func batmapMapSectors(entries uint32) uint32 {
	return uint32(max(1, (int64(entries)+8*SectorSize-1)/(8*SectorSize)))
}

// batmapChecksum is the checksum of the map bytes m (the checksummed
// part) as a header of version records it.
func batmapChecksum(m []byte, version uint32) uint32 {
	var sum uint32
	for _, c := range m {
		if version == batmapVersion11 {
			sum += uint32(int32(int8(c)))
		} else {
			sum += uint32(c)
		}
	}
	return ^sum
}

// isTapCreator reports whether a footer names blktap as the creator:
// libvhd compares the first three bytes only.
func isTapCreator(ft *Footer) bool { return string(ft.CreatorApp[:3]) == "tap" }

// batmapRule says whether libvhd looks for a batmap in an image with
// footer ft: always, never, or only if the header after the BAT reads as
// one (maybe: creator versions after 0.1 and before 1.2, which images
// upgraded from 0.1 share with ones that have a batmap).
type batmapRule int

const (
	batmapNever batmapRule = iota
	batmapMaybe
	batmapAlways
)

func batmapRuleOf(ft *Footer) batmapRule {
	switch {
	case ft.DiskType != TypeDynamic && ft.DiskType != TypeDifferencing, !isTapCreator(ft), ft.CreatorVersion <= 0x00000001:
		return batmapNever
	case ft.CreatorVersion >= 0x00010002:
		return batmapAlways
	}
	return batmapMaybe
}

// HasBatmap reports whether blktap keeps a batmap in images with this
// footer (version 1.1 images may or may not: see batmapRule).
func (f *Footer) HasBatmap() bool { return batmapRuleOf(f) == batmapAlways }

// batmapHeaderOff is where the batmap header of an image whose BAT is at
// tableOff with maxEntries entries sits.
func batmapHeaderOff(tableOff int64, maxEntries uint32) int64 {
	return tableOff + batBytes(maxEntries)
}

func (h BatmapHeader) String() string {
	return fmt.Sprintf("map at %#x, %d sectors, version %#08x, checksum %#08x", h.MapOffset, h.MapSize, h.Version, h.Checksum)
}

// newBatmap lays out an empty batmap for a new image whose BAT of
// entries ends at off, as blktap does: the header there, the map right
// after, a bit per entry and at least what libvhd reads (it asserts the
// map holds that much). It returns the writes and where the batmap ends.
func newBatmap(off int64, entries uint32, curSize uint64) ([]pendingWrite, int64) {
	sum := batmapSumBytes(curSize)
	h := BatmapHeader{MapOffset: uint64(off + BatmapHeaderSize), MapSize: max(batmapMapSectors(entries), uint32(sum/SectorSize)), Version: batmapVersion}
	m := make([]byte, h.MapBytes())
	h.Checksum = batmapChecksum(m[:sum], h.Version)
	raw := h.Marshal()
	return []pendingWrite{{off, raw[:]}, {off + BatmapHeaderSize, m}}, off + BatmapHeaderSize + h.MapBytes()
}
