package vhdgen

// refFooter is what the reference takes from a footer.
type refFooter struct {
	typ      uint32
	size     int64 // the disk's size (diskSize)
	cur      int64 // the current size field
	dataOff  uint64
	uuid     [16]byte
	time     uint32
	dataEnd  int64 // where the data area ends: the footer at the end
	fromCopy bool
}

// readFooter finds the footer: the 512 bytes at the end; or 511 bytes
// there for a fixed disk (pre-2004 Virtual PC); or, for a dynamic or
// differencing disk whose footer at the end is damaged, the copy at
// offset 0 (the specification keeps it for that).
func readFooter(f *File) (refFooter, error) {
	n := f.Size()
	if n < FooterSize-1 {
		return refFooter{}, refuse("a %d-byte file has no footer", n)
	}
	if n >= FooterSize {
		if ft, err := parseFooter(f.Bytes(n-FooterSize, FooterSize)); err == nil {
			ft.dataEnd = n - FooterSize
			return ft, checkFixedLength(ft, n, FooterSize)
		}
	}
	if ft, err := parseFooter(f.Bytes(n-(FooterSize-1), FooterSize-1)); err == nil && ft.typ == TypeFixed {
		ft.dataEnd = n - (FooterSize - 1)
		return ft, checkFixedLength(ft, n, FooterSize-1)
	}
	ft, err := parseFooter(f.Bytes(0, FooterSize))
	if err != nil {
		return refFooter{}, refuse("no valid footer at the end or at offset 0 (%s)", err.(*Refused).Why)
	}
	if ft.typ == TypeFixed {
		return refFooter{}, refuse("the footer at the end of a fixed disk is damaged")
	}
	ft.dataEnd, ft.fromCopy = n, true
	return ft, nil
}

// checkFixedLength: a fixed disk's data is the file before its footer.
func checkFixedLength(ft refFooter, n, footerLen int64) error {
	if ft.typ == TypeFixed && n-footerLen < ft.cur {
		return refuse("a fixed disk of %d bytes in a %d-byte file", ft.cur, n)
	}
	return nil
}

// parseFooter validates a footer alone (511 or 512 bytes).
func parseFooter(b []byte) (refFooter, error) {
	if string(b[:8]) != "conectix" {
		return refFooter{}, refuse("footer cookie %q", b[:8])
	}
	full := make([]byte, FooterSize)
	copy(full, b)
	if Checksum(full, OffFooterChecksum) != be.Uint32(full[OffFooterChecksum:]) {
		return refFooter{}, refuse("footer checksum")
	}
	if v := be.Uint32(full[OffFooterVersion:]); v>>16 != 1 {
		return refFooter{}, refuse("footer version %#x", v)
	}
	ft := refFooter{
		typ:     be.Uint32(full[OffFooterDiskType:]),
		dataOff: be.Uint64(full[OffFooterDataOffset:]),
		time:    be.Uint32(full[OffFooterTimestamp:]),
	}
	copy(ft.uuid[:], full[OffFooterUUID:])
	size := be.Uint64(full[OffFooterCurSize:])
	if size%SectorSize != 0 || size > MaxDiskSize {
		return refFooter{}, refuse("footer current size %d", size)
	}
	ft.size = int64(size)
	ft.cur = int64(size)
	ft.size = diskSize(string(full[OffFooterCreatorApp:OffFooterCreatorApp+4]), be.Uint32(full[OffFooterGeometry:]), ft.cur)
	switch ft.typ {
	case TypeFixed:
		if ft.dataOff != ^uint64(0) && ft.dataOff != 0xFFFFFFFF {
			return refFooter{}, refuse("fixed disk's footer data offset %#x", ft.dataOff)
		}
	case TypeDynamic, TypeDifferencing:
	default:
		return refFooter{}, refuse("footer disk type %d", ft.typ)
	}
	return ft, nil
}

// diskSize is the disk's size by the rule of docs' VHD notes ("Size and
// geometry"): the current size, except for the creators "vpc " and
// "qemu", which size a disk by its CHS product: when that is smaller
// than the current size and not the CHS maximum (which means "larger
// than CHS can say").
func diskSize(creator string, geometry uint32, cur int64) int64 {
	if creator != "vpc " && creator != "qemu" {
		return cur
	}
	chs := int64(geometry>>16) * int64(geometry>>8&0xFF) * int64(geometry&0xFF) * SectorSize
	if chs == 0 || chs >= cur || chs == 65535*16*255*SectorSize {
		return cur
	}
	return chs
}
