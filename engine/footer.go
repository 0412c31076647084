package engine

import (
	"bytes"
	"encoding/binary"
	"time"
)

// The hard disk footer: 512 bytes at the end of every VHD, and a copy at
// offset 0 of dynamic and differencing images. Integers are big-endian.
//
//	 0 +----------------+ cookie "conectix"
//	 8 | features    u32| 0x2 reserved bit always set; 0x1 temporary
//	12 | version     u32| 0x00010000
//	16 | data offset u64| dynamic header offset; all ones for fixed disks
//	24 | timestamp   u32| seconds since 2000-01-01 UTC
//	28 | creator app [4]| "win ", "vpc ", "qemu", "tap\0", ...
//	32 | creator ver u32|
//	36 | creator os  [4]| "Wi2k" or "Mac "
//	40 | orig size   u64| bytes
//	48 | cur size    u64| bytes: the size of the disk
//	56 | geometry    u32| cylinders u16, heads u8, sectors per track u8
//	60 | disk type   u32| 2 fixed, 3 dynamic, 4 differencing
//	64 | checksum    u32| ^(byte sum of the footer with this field zero)
//	68 | unique id  [16]|
//	84 | saved state  u8|
//	85 | reserved  [427]| Xen keeps a "hidden" flag in the first byte
//	512+----------------+
const (
	FooterSize = 512
	// footerSize511 is the footer length of pre-2004 Virtual PC images,
	// which left the last (reserved) byte off.
	footerSize511 = 511

	footerCookie = "conectix"

	offFooterFeatures   = 8
	offFooterVersion    = 12
	offFooterDataOffset = 16
	offFooterTimestamp  = 24
	offFooterCreatorApp = 28
	offFooterCreatorVer = 32
	offFooterCreatorOS  = 36
	offFooterOrigSize   = 40
	offFooterCurSize    = 48
	offFooterGeometry   = 56
	offFooterDiskType   = 60
	offFooterChecksum   = 64
	offFooterUUID       = 68
	offFooterSavedState = 84
	offFooterHidden     = 85

	featureTemporary = 0x1
	featureReserved  = 0x2

	formatVersion = 0x00010000

	// noDataOffset is the data offset of a fixed disk.
	noDataOffset = ^uint64(0)
)

// DiskType is the footer's disk type field.
type DiskType uint32

// The disk types a VHD can have.
const (
	TypeFixed        DiskType = 2
	TypeDynamic      DiskType = 3
	TypeDifferencing DiskType = 4
)

func (t DiskType) String() string {
	switch t {
	case TypeFixed:
		return "fixed"
	case TypeDynamic:
		return "dynamic"
	case TypeDifferencing:
		return "differencing"
	}
	return "unknown"
}

// vhdEpoch is time zero of VHD timestamps.
var vhdEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// VHDTime converts a VHD timestamp to a time.
func VHDTime(ts uint32) time.Time { return vhdEpoch.Add(time.Duration(ts) * time.Second) }

// TimestampOf converts a time to a VHD timestamp, clamped to the field.
func TimestampOf(t time.Time) uint32 {
	s := t.Unix() - vhdEpoch.Unix()
	if s < 0 {
		return 0
	}
	if s > int64(^uint32(0)) {
		return ^uint32(0)
	}
	return uint32(s)
}

// Footer is a decoded hard disk footer.
type Footer struct {
	Features       uint32
	Version        uint32
	DataOffset     uint64
	Timestamp      uint32
	CreatorApp     [4]byte
	CreatorVersion uint32
	CreatorHostOS  [4]byte
	OriginalSize   uint64
	CurrentSize    uint64
	Geometry       Geometry
	DiskType       DiskType
	Checksum       uint32
	UUID           UUID
	SavedState     uint8
	Hidden         uint8
	// Short is set when the footer was read from a 511-byte pre-2004 image.
	Short bool
}

// ParseFooter decodes and validates a footer from b, which holds 512 bytes
// (or 511 from an old Virtual PC image). off is where b came from in the
// file, used only in error messages. It checks what makes a footer
// unusable: cookie, checksum, version, disk type, size and data offset.
// Softer problems (reserved bit, future timestamp, geometry) are left to
// Check.
func ParseFooter(b []byte, off int64) (Footer, error) {
	var raw [FooterSize]byte
	if len(b) != FooterSize && len(b) != footerSize511 {
		return Footer{}, corrupt("footer", "", off, "is %d bytes, want 512", len(b))
	}
	copy(raw[:], b)
	if string(raw[:8]) != footerCookie {
		return Footer{}, corrupt("footer", "cookie", off, "is %q, want %q", raw[:8], footerCookie)
	}
	want := binary.BigEndian.Uint32(raw[offFooterChecksum:])
	if got := checksum(raw[:], offFooterChecksum); got != want {
		return Footer{}, corrupt("footer", "checksum", off+offFooterChecksum, "is %#08x, bytes sum to %#08x", want, got)
	}
	f := decodeFooter(&raw)
	f.Short = len(b) == footerSize511
	if f.Version>>16 != 1 {
		return Footer{}, corrupt("footer", "version", off+offFooterVersion, "%#08x is not version 1.x", f.Version)
	}
	switch f.DiskType {
	case TypeFixed:
		if f.DataOffset != noDataOffset {
			return Footer{}, corrupt("footer", "data offset", off+offFooterDataOffset, "%#x on a fixed disk, want all ones", f.DataOffset)
		}
	case TypeDynamic, TypeDifferencing:
		if f.DataOffset == noDataOffset || f.DataOffset%512 != 0 {
			return Footer{}, corrupt("footer", "data offset", off+offFooterDataOffset, "%#x is not a sector offset", f.DataOffset)
		}
	default:
		return Footer{}, corrupt("footer", "disk type", off+offFooterDiskType, "%d is not fixed (2), dynamic (3) or differencing (4)", uint32(f.DiskType))
	}
	if f.CurrentSize%SectorSize != 0 {
		return Footer{}, corrupt("footer", "current size", off+offFooterCurSize, "%d is not a whole number of sectors", f.CurrentSize)
	}
	if f.CurrentSize > MaxSize {
		return Footer{}, corrupt("footer", "current size", off+offFooterCurSize, "%d is over the format's 2040 GiB limit", f.CurrentSize)
	}
	return f, nil
}

func decodeFooter(raw *[FooterSize]byte) Footer {
	be := binary.BigEndian
	var f Footer
	f.Features = be.Uint32(raw[offFooterFeatures:])
	f.Version = be.Uint32(raw[offFooterVersion:])
	f.DataOffset = be.Uint64(raw[offFooterDataOffset:])
	f.Timestamp = be.Uint32(raw[offFooterTimestamp:])
	copy(f.CreatorApp[:], raw[offFooterCreatorApp:])
	f.CreatorVersion = be.Uint32(raw[offFooterCreatorVer:])
	copy(f.CreatorHostOS[:], raw[offFooterCreatorOS:])
	f.OriginalSize = be.Uint64(raw[offFooterOrigSize:])
	f.CurrentSize = be.Uint64(raw[offFooterCurSize:])
	f.Geometry = decodeGeometry(be.Uint32(raw[offFooterGeometry:]))
	f.DiskType = DiskType(be.Uint32(raw[offFooterDiskType:]))
	f.Checksum = be.Uint32(raw[offFooterChecksum:])
	copy(f.UUID[:], raw[offFooterUUID:])
	f.SavedState = raw[offFooterSavedState]
	f.Hidden = raw[offFooterHidden]
	return f
}

// Marshal encodes the footer with a fresh checksum.
func (f *Footer) Marshal() [FooterSize]byte {
	be := binary.BigEndian
	var raw [FooterSize]byte
	copy(raw[:], footerCookie)
	be.PutUint32(raw[offFooterFeatures:], f.Features)
	be.PutUint32(raw[offFooterVersion:], f.Version)
	be.PutUint64(raw[offFooterDataOffset:], f.DataOffset)
	be.PutUint32(raw[offFooterTimestamp:], f.Timestamp)
	copy(raw[offFooterCreatorApp:], f.CreatorApp[:])
	be.PutUint32(raw[offFooterCreatorVer:], f.CreatorVersion)
	copy(raw[offFooterCreatorOS:], f.CreatorHostOS[:])
	be.PutUint64(raw[offFooterOrigSize:], f.OriginalSize)
	be.PutUint64(raw[offFooterCurSize:], f.CurrentSize)
	be.PutUint32(raw[offFooterGeometry:], f.Geometry.encode())
	be.PutUint32(raw[offFooterDiskType:], uint32(f.DiskType))
	copy(raw[offFooterUUID:], f.UUID[:])
	raw[offFooterSavedState] = f.SavedState
	raw[offFooterHidden] = f.Hidden
	f.Checksum = checksum(raw[:], offFooterChecksum)
	be.PutUint32(raw[offFooterChecksum:], f.Checksum)
	return raw
}

// DiskSize is the size of the disk the footer describes: the current
// size field, except for images whose creator is Virtual PC ("vpc ") or
// QEMU ("qemu"; QEMU writes "qem2" instead when told to keep an exact
// size, force_size=on). Those tools size a disk by its CHS geometry:
// their guests see the CHS product, which is smaller than most sizes
// asked for, while current size may still claim the size asked for.
// QEMU reads these two creators at the CHS size (block/vpc.c, whose
// comment says Virtual PC "relies on CHS geometry"), and
// shared/reference/vhd-format.md ("Size and geometry") makes it the
// rule for exactly these two creators; vhdkit follows it. (libvhdi uses
// current size for every creator, so it sees such an image larger.)
// Two guards keep the rule from doing harm: a geometry at the CHS
// maximum, 65535/16/255, means the disk is larger than CHS can say, so
// current size stands, as in QEMU; and the CHS product is used only when
// it is smaller than current size, so the disk never reaches past what
// the BAT or a fixed image's data covers. QEMU 7.2 makes images whose
// current size is the CHS product, so for them the rule changes nothing.
func (f *Footer) DiskSize() int64 {
	cur := int64(f.CurrentSize)
	switch string(f.CreatorApp[:]) {
	case "vpc ", "qemu":
	default:
		return cur
	}
	g := f.Geometry
	chs := g.Bytes()
	if chs == 0 || chs >= cur || chs == maxCHSSectors*SectorSize {
		return cur
	}
	return chs
}

// Creator returns the creator application as printable text.
func (f *Footer) Creator() string { return printable(f.CreatorApp[:]) }

// HostOS returns the creator host OS as printable text.
func (f *Footer) HostOS() string { return printable(f.CreatorHostOS[:]) }

// checksum is the VHD checksum: the one's complement of the byte sum of b
// with the four checksum bytes at skip taken as zero.
func checksum(b []byte, skip int) uint32 {
	var sum uint32
	for i, c := range b {
		if i >= skip && i < skip+4 {
			continue
		}
		sum += uint32(c)
	}
	return ^sum
}

// printable renders a fixed-width ASCII field, trimming NULs and showing
// other control bytes as escapes.
func printable(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	var out []byte
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			out = append(out, c)
		} else {
			out = append(out, []byte("\\x"+string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15]))...)
		}
	}
	return string(out)
}
