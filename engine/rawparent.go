package engine

import (
	"fmt"
	"log/slog"
	"os"
)

// Raw parents: Xen's blktap can give a differencing image a raw disk
// image (the disk's bytes, no VHD structure) as its parent (vhd-util
// snapshot -m). Such a child records a null parent UUID, which is how
// blktap tells (libvhd's vhd_parent_raw), the raw file's name in its
// locators, and the file's modification time as the parent timestamp.

// ParentIsRaw reports whether a differencing image (its footer and
// header) has a raw disk image as its parent, by blktap's rule: a null
// parent UUID, in an image blktap made. (A null UUID in another image is
// damage: Check reports it.)
func ParentIsRaw(ft *Footer, h *DynamicHeader) bool {
	return ft.DiskType == TypeDifferencing && h != nil && isTapCreator(ft) && h.ParentUUID.IsZero()
}

// HasRawParent is ParentIsRaw for an open image.
func (img *Image) HasRawParent() bool {
	ft := img.Footer()
	return img.sparse != nil && ParentIsRaw(&ft, &img.sparse.hdr)
}

// IsRaw reports whether the image is a raw disk opened as a parent
// (OpenRawParent).
func (img *Image) IsRaw() bool { return img.raw }

// rawCreator names what made the footer OpenRawParent makes up.
var rawCreator = [4]byte{'r', 'a', 'w', 0}

// OpenRawParent opens the raw disk image in osf, read-only, as the
// parent of a differencing image whose parent is raw (HasRawParent). It
// reads as a fixed image of the file's size (rounded down to whole
// sectors), whose made-up footer has no UUID, no timestamp (the file's
// modification time is what blktap records of the parent, and chains
// compares it as it does for any parent) and "raw" as its creator; it
// is never written. It takes a shared lock, as parents
// do. The image owns osf from then on; on error osf is closed.
func OpenRawParent(osf *os.File, path string, opts Options) (*Image, error) {
	st, err := osf.Stat()
	if err != nil {
		osf.Close()
		return nil, err
	}
	unlock := func() {}
	if !opts.NoLock {
		if unlock, err = lockFile(osf, path, false); err != nil {
			osf.Close()
			return nil, err
		}
	}
	size := st.Size() / SectorSize * SectorSize
	if size > MaxSize {
		unlock()
		osf.Close()
		return nil, fmt.Errorf("%s: a raw parent of %d bytes is over the VHD limit of 2040 GiB", path, st.Size())
	}
	img := &Image{f: OSFile(osf), name: path, readOnly: true, raw: true, unlock: unlock, share: func() error { return nil }, log: opts.Logger}
	if img.log == nil {
		img.log = slog.New(slog.DiscardHandler)
	}
	img.footer = Footer{
		Features: featureReserved, Version: formatVersion, DataOffset: noDataOffset,
		CreatorApp:   rawCreator,
		OriginalSize: uint64(size), CurrentSize: uint64(size), Geometry: GeometryFor(max(size, SectorSize)), DiskType: TypeFixed,
	}
	img.lay = &fixed{img: img, f: img.f, size: size, footerOff: size}
	return img, nil
}
