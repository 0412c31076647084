package engine

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf16"
)

// A parent locator entry: 24 bytes, eight of them at offset 576 of the
// dynamic header. Each points at a platform-specific path to the parent.
//
//	 0 +---------------+ platform code: "W2ku", "W2ru", "MacX", ...
//	 4 | data space u32| room reserved: sectors per the spec, bytes in practice
//	 8 | data len   u32| bytes of path
//	12 | reserved   u32|
//	16 | data off   u64| file offset of the path
//	24 +---------------+
const (
	locatorSize  = 24
	locatorCount = 8

	// maxLocatorLen bounds a locator's path: Windows paths are at most
	// 32767 UTF-16 units; nothing longer is a path.
	maxLocatorLen = 65536
)

// Locator platform codes.
const (
	LocatorNone = ""
	LocatorW2ku = "W2ku" // absolute Windows path, UTF-16LE
	LocatorW2ru = "W2ru" // relative Windows path, UTF-16LE
	LocatorMacX = "MacX" // file:// URL, UTF-8
	LocatorMac  = "Mac " // Mac OS alias blob
	LocatorWi2r = "Wi2r" // deprecated
	LocatorWi2k = "Wi2k" // deprecated
)

// Locator is one decoded parent locator entry.
type Locator struct {
	Code       [4]byte
	DataSpace  uint32
	DataLength uint32
	Reserved   uint32
	DataOffset uint64
	// at is where the entry itself sits in the file, for error messages.
	at int64
}

func decodeLocator(b []byte, at int64) Locator {
	be := binary.BigEndian
	var l Locator
	copy(l.Code[:], b[0:4])
	l.DataSpace = be.Uint32(b[4:])
	l.DataLength = be.Uint32(b[8:])
	l.Reserved = be.Uint32(b[12:])
	l.DataOffset = be.Uint64(b[16:])
	l.at = at
	return l
}

func (l Locator) encode(b []byte) {
	be := binary.BigEndian
	copy(b[0:4], l.Code[:])
	be.PutUint32(b[4:], l.DataSpace)
	be.PutUint32(b[8:], l.DataLength)
	be.PutUint32(b[12:], l.Reserved)
	be.PutUint64(b[16:], l.DataOffset)
}

// CodeString is the platform code as text ("" for an empty entry).
func (l Locator) CodeString() string {
	if l.Code == [4]byte{} {
		return LocatorNone
	}
	return printable(l.Code[:])
}

// Empty reports whether the entry is unused.
func (l Locator) Empty() bool { return l.Code == [4]byte{} && l.DataLength == 0 }

// spaceBytes is the room the entry reserves in bytes. The spec says data
// space counts sectors; Windows and blktap write bytes. A value that is
// smaller than the data length can only be sectors.
func (l Locator) spaceBytes() int64 {
	if int64(l.DataSpace) < int64(l.DataLength) {
		return int64(l.DataSpace) * SectorSize
	}
	return int64(l.DataSpace)
}

// validate checks the entry against the end of the file's data area
// (before the footer at the end, or the end of the file when the copy at
// offset 0 stands in for it): a known code, a sane length, and the data
// and the space it reserves inside that area. Checked against the file's
// end, a locator's space could reach into the footer, and a new link
// written into that space (set-parent) would overwrite the footer.
func (l Locator) validate(dataEnd int64) error {
	if l.Empty() {
		return nil
	}
	switch l.CodeString() {
	case LocatorW2ku, LocatorW2ru, LocatorMacX, LocatorMac, LocatorWi2r, LocatorWi2k:
	default:
		return corrupt("parent locator", "code", l.at, "%q is not a known platform code", l.CodeString())
	}
	if l.DataLength > maxLocatorLen {
		return corrupt("parent locator", "data length", l.at+8, "%d bytes is too long for a path", l.DataLength)
	}
	end := l.DataOffset + uint64(l.DataLength)
	if l.DataOffset > uint64(dataEnd) || end > uint64(dataEnd) {
		return corrupt("parent locator", "data offset", l.at+16, "%#x+%d runs past the end of the data area (%#x)", l.DataOffset, l.DataLength, dataEnd)
	}
	// The space the entry reserves must lie inside the file too: it is
	// a span blocks must not overlap, and a lying data space (up to 2
	// TiB read as sectors) made every block "overlap the parent
	// locator" instead of naming the field at fault.
	if space := uint64(l.spaceBytes()); l.DataOffset+space > uint64(dataEnd) {
		return corrupt("parent locator", "data space", l.at+4, "%#x+%d runs past the end of the data area (%#x)", l.DataOffset, space, dataEnd)
	}
	if l.DataOffset < FooterSize {
		return corrupt("parent locator", "data offset", l.at+16, "%#x overlaps the footer copy", l.DataOffset)
	}
	return nil
}

// DecodeLocatorPath turns a locator's data into a path. W2ku and W2ru are
// UTF-16LE Windows paths, MacX a UTF-8 file:// URL; the Mac alias blob and
// the deprecated codes give an error.
func DecodeLocatorPath(code string, data []byte) (string, error) {
	switch code {
	case LocatorW2ku, LocatorW2ru:
		return decodeUTF16(data, false), nil
	case LocatorMacX:
		s := strings.TrimRight(string(data), "\x00")
		s = strings.TrimPrefix(s, "file://")
		if strings.HasPrefix(s, "localhost/") {
			s = s[len("localhost"):]
		}
		return unescapeURLPath(s), nil
	}
	return "", fmt.Errorf("vhd: parent locator %q cannot be decoded", code)
}

// EncodeLocatorPath is DecodeLocatorPath's inverse.
func EncodeLocatorPath(code, path string) []byte {
	switch code {
	case LocatorW2ku, LocatorW2ru:
		u := utf16.Encode([]rune(path))
		b := make([]byte, 2*len(u))
		for i, c := range u {
			binary.LittleEndian.PutUint16(b[2*i:], c)
		}
		return b
	case LocatorMacX:
		e := escapeURLPath(path)
		if strings.HasPrefix(e, "localhost/") {
			// Else it reads back as the URL's host: "file://localhost/x"
			// is "/x".
			e = "%6C" + e[1:]
		}
		return []byte("file://" + e)
	}
	return nil
}

// decodeUTF16 decodes UTF-16 (big- or little-endian), stopping at the
// first NUL.
func decodeUTF16(b []byte, bigEndian bool) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		var c uint16
		if bigEndian {
			c = binary.BigEndian.Uint16(b[i:])
		} else {
			c = binary.LittleEndian.Uint16(b[i:])
		}
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// encodeUTF16 writes s into b as UTF-16, truncated to fit, zero padded.
func encodeUTF16(b []byte, s string, bigEndian bool) {
	clear(b)
	for i, c := range utf16.Encode([]rune(s)) {
		if 2*i+1 >= len(b) {
			return
		}
		if bigEndian {
			binary.BigEndian.PutUint16(b[2*i:], c)
		} else {
			binary.LittleEndian.PutUint16(b[2*i:], c)
		}
	}
}

// escapeURLPath percent-encodes what a file:// URL path cannot hold.
func escapeURLPath(p string) string {
	var sb strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= 0x20 || c >= 0x7f || c == '%' || c == '?' || c == '#' {
			fmt.Fprintf(&sb, "%%%02X", c)
		} else {
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

func unescapeURLPath(p string) string {
	var out []byte
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			out = append(out, unhex(p[i+1])<<4|unhex(p[i+2]))
			i += 2
			continue
		}
		out = append(out, p[i])
	}
	return string(out)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
