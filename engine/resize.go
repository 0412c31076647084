package engine

import (
	"errors"
	"fmt"
)

// ErrShrinkData is returned when a shrink would cut off data.
var ErrShrinkData = errors.New("vhd: the part a shrink would cut off holds data")

// Resize changes the virtual size. Growing is always allowed; shrinking
// only with allowShrink and only when the part cut off holds no data
// (reads as zeros). No other I/O may run on the image meanwhile.
//
// Dynamic and differencing images commit the new size through relocate
// (a bigger BAT, when needed, is written past the end of the file, so no
// block moves). Fixed images: see resizeFixed.
func (img *Image) Resize(newSize int64, allowShrink bool) error {
	if img.readOnly {
		return ErrReadOnly
	}
	if err := ValidateSize(newSize); err != nil {
		return err
	}
	old := img.Size()
	if newSize == old {
		return nil
	}
	if newSize < old {
		if !allowShrink {
			return fmt.Errorf("%s: shrinking from %d to %d bytes cuts off data; ask for it explicitly (--shrink)", img.name, old, newSize)
		}
		if err := img.tailIsZero(newSize); err != nil {
			return err
		}
	}
	if img.sparse != nil {
		if newSize < old {
			// Free the blocks past the new end so the BAT on disk no
			// longer lists them.
			if err := img.sparse.zero(newSize, old-newSize, ZeroMayDeallocate); err != nil {
				return err
			}
		}
		return img.sparse.relocate(metaChange{size: newSize})
	}
	return img.resizeFixed(newSize)
}

// tailIsZero checks that [from, Size()) holds no data, reading only what
// the extents call data.
func (img *Image) tailIsZero(from int64) error {
	size := img.Size()
	buf := make([]byte, 1<<20)
	for off := from; off < size; {
		n := min(size-off, 64<<20)
		ext, err := img.Extents(off, n)
		if err != nil {
			return err
		}
		for _, e := range ext {
			if e.State != ExtentData {
				continue
			}
			for p := e.Off; p < e.Off+e.Len; {
				c := min(int64(len(buf)), e.Off+e.Len-p)
				if _, err := img.ReadAt(buf[:c], p); err != nil {
					return err
				}
				if !isZero(buf[:c]) {
					return fmt.Errorf("%s: %w (first at byte %d); nothing changed", img.name, ErrShrinkData, p)
				}
				p += c
			}
		}
		off += n
	}
	return nil
}

// setSize gives a footer a new size. The creator becomes vhdkit's (see
// creatorApp): a "vpc " or "qemu" creator would make readers size the
// disk by its geometry, not by the size asked for.
func setSize(ft *Footer, size int64) {
	ft.CurrentSize = uint64(size)
	ft.Geometry = GeometryFor(size)
	ft.CreatorApp, ft.CreatorVersion, ft.CreatorHostOS = creatorApp, creatorVersion, creatorHostOS
}

// resizeFixed moves a fixed image's only footer.
//
// Growing: the new footer is written at the new end and synced first (the
// file then holds two valid footers, and the one at the end wins), then
// the old footer's sector, now disk data, is zeroed and synced. A crash
// between the two leaves the grown disk with the old footer's 512 bytes
// in the new space instead of zeros; never an image that does not open.
//
// Shrinking: the new footer is written at the new end (inside the space
// being cut off, which holds zeros) and synced, then the file is cut
// after it. A crash before the cut leaves the old size, with the new
// footer's 512 bytes in that space instead of zeros.
func (img *Image) resizeFixed(newSize int64) error {
	x := img.lay.(*fixed)
	ft := img.Footer()
	oldSize := int64(ft.CurrentSize)
	setSize(&ft, newSize)
	raw := ft.Marshal()
	if _, err := img.f.WriteAt(raw[:], newSize); err != nil {
		return ioError("write footer", newSize, err)
	}
	if err := img.f.Sync(); err != nil {
		return ioError("sync", 0, err)
	}
	if newSize > oldSize {
		if _, err := img.f.WriteAt(zeroBuf[:FooterSize], oldSize); err != nil {
			return ioError("zero old footer", oldSize, err)
		}
	} else if err := img.f.Truncate(newSize + FooterSize); err != nil {
		return ioError("truncate", newSize+FooterSize, err)
	}
	if err := img.f.Sync(); err != nil {
		return ioError("sync", 0, err)
	}
	img.footerMu.Lock()
	img.footer = ft
	img.footerMu.Unlock()
	x.size = newSize
	return nil
}
