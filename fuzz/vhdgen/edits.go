package vhdgen

// Edits of a whole image held as bytes, for tests that damage images
// made elsewhere (engine/corrupt_test.go): each returns a function that
// edits the image and returns it (shorter, for a truncation). Field
// edits fix the structure's checksum, so the field itself is what gets
// judged; raw edits do not.

// EOFFooter is the footer at the end of b.
func EOFFooter(b []byte) []byte { return b[len(b)-FooterSize:] }

// Header is the dynamic header, at its usual offset 512.
func Header(b []byte) []byte { return b[FooterSize : FooterSize+HeaderSize] }

// Footers edits the footer at the end and, if copy0, the copy at 0,
// fixing their checksums.
func Footers(copy0 bool, fn func(f []byte)) func([]byte) []byte {
	return func(b []byte) []byte {
		fn(EOFFooter(b))
		SetChecksum(EOFFooter(b), OffFooterChecksum)
		if copy0 {
			fn(b[:FooterSize])
			SetChecksum(b[:FooterSize], OffFooterChecksum)
		}
		return b
	}
}

// RawFooters edits the footers without fixing their checksums.
func RawFooters(copy0 bool, fn func(f []byte)) func([]byte) []byte {
	return func(b []byte) []byte {
		fn(EOFFooter(b))
		if copy0 {
			fn(b[:FooterSize])
		}
		return b
	}
}

// HeaderField edits the dynamic header, fixing its checksum.
func HeaderField(fn func(h []byte)) func([]byte) []byte {
	return func(b []byte) []byte {
		fn(Header(b))
		SetChecksum(Header(b), OffHdrChecksum)
		return b
	}
}

// Put32 and Put64 set a big-endian field of a structure.
func Put32(off int, v uint32) func([]byte) { return func(s []byte) { be.PutUint32(s[off:], v) } }
func Put64(off int, v uint64) func([]byte) { return func(s []byte) { be.PutUint64(s[off:], v) } }

// LocatorEntry edits parent locator entry i of the header (checksum
// fixed).
func LocatorEntry(i int, fn func(l []byte)) func([]byte) []byte {
	return HeaderField(func(h []byte) { fn(h[OffHdrLocators+i*LocatorSize:][:LocatorSize]) })
}

// TableOffset is the BAT's file offset the header gives.
func TableOffset(b []byte) int64 { return int64(be.Uint64(Header(b)[OffHdrTableOffset:])) }

// BATEntry is BAT entry i.
func BATEntry(b []byte, i int) uint32 { return be.Uint32(b[TableOffset(b)+4*int64(i):]) }

// SetBATEntry sets BAT entry i to what v computes from the image.
func SetBATEntry(i int, v func(b []byte) uint32) func([]byte) []byte {
	return func(b []byte) []byte {
		be.PutUint32(b[TableOffset(b)+4*int64(i):], v(b))
		return b
	}
}

// Truncate cuts the image to what n computes from it.
func Truncate(n func(b []byte) int) func([]byte) []byte {
	return func(b []byte) []byte { return b[:n(b)] }
}
