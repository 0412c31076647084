package engine

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrShrinkData is returned when a shrink would cut off data.
var ErrShrinkData = errors.New("vhd: the part a shrink would cut off holds data")

// Resize changes the virtual size. Growing is always allowed; shrinking
// only with allowShrink and only when the part cut off holds no data
// (reads as zeros). No other I/O may run on the image meanwhile.
//
// Dynamic and differencing images commit the new size through relocate
// (a bigger BAT, when needed, goes where there is room, so no block
// moves). Fixed images: see resizeFixed.
func (img *Image) Resize(newSize int64, allowShrink bool) error {
	if img.readOnly {
		return ErrReadOnly
	}
	if err := ValidateSize(newSize); err != nil {
		return err
	}
	old := img.Size()
	if newSize < old {
		if !allowShrink {
			return fmt.Errorf("%s: shrinking from %d to %d bytes needs --shrink (or --size -N); it is refused anyway if the part cut off holds data", img.name, old, newSize)
		}
		if err := img.tailIsZero(newSize); err != nil {
			return err
		}
	}
	return img.resize(newSize)
}

// Grow is Resize to a size at least the current one: a merge grows its
// target so (chains), and never shrinks anything.
func (img *Image) Grow(newSize int64) error {
	if img.readOnly {
		return ErrReadOnly
	}
	if err := ValidateSize(newSize); err != nil {
		return err
	}
	if old := img.Size(); newSize < old {
		return fmt.Errorf("%s: cannot grow to %d bytes: it is %d already", img.name, newSize, old)
	}
	return img.resize(newSize)
}

// resize changes the size to newSize, checked by the caller.
func (img *Image) resize(newSize int64) error {
	old := img.Size()
	if newSize == old {
		return nil
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
// disk by its geometry, not by the size asked for. blktap's is kept (QEMU
// sizes it by current size too): Xen's tools keep their batmap only in
// images they think theirs.
func setSize(ft *Footer, size int64) {
	ft.CurrentSize = uint64(size)
	ft.Geometry = GeometryFor(size)
	if !isTapCreator(ft) {
		ft.CreatorApp, ft.CreatorVersion, ft.CreatorHostOS = creatorApp, creatorVersion, creatorHostOS
	}
}

// resizeFixed moves a fixed image's only footer. The footer is at
// x.footerOff, which is the old size unless bytes that belong to nothing
// lie between the data and the footer (a gap; check reports it).
//
// The new footer goes at the new size; the file must end with it, and
// the grown disk's new space must read as zeros. In order:
//  1. Growing: the gap's bytes that become disk space are zeroed and
//     synced. They are nothing yet, so a crash here changes no disk.
//  2. The new footer is written at the new size and synced. If it ends
//     at or past the old end, it is now the file's last sector: the
//     image has its new size. (Sizes are whole sectors, so it is one
//     aligned sector, written whole.)
//  3. If the old end lies past the new footer (shrinking, or growing
//     into a gap), the file is cut after the new footer and synced.
//     Before the cut the old footer is still the last: the old size.
//  4. Growing past the old end: the old footer's bytes, now disk space,
//     are zeroed and synced. A crash before this leaves the grown disk
//     with those bytes instead of zeros in its new space; never an
//     image that does not open. Space past the old end was never
//     written and reads as zeros.
func (img *Image) resizeFixed(newSize int64) error {
	x := img.lay.(*fixed)
	ft := img.Footer()
	oldSize, oldFooter := int64(ft.CurrentSize), x.footerOff
	oldEnd, err := img.f.Size()
	if err != nil {
		return ioError("stat", 0, err)
	}
	setSize(&ft, newSize)
	raw := ft.Marshal()
	if gapEnd := min(newSize, oldFooter); gapEnd > oldSize {
		if err := img.zeroAndSync(oldSize, gapEnd-oldSize); err != nil {
			return err
		}
	}
	if _, err := img.f.WriteAt(raw[:], newSize); err != nil {
		return ioError("write footer", newSize, err)
	}
	if err := img.f.Sync(); err != nil {
		return ioError("sync", 0, err)
	}
	newEnd := newSize + FooterSize
	switch {
	case oldEnd > newEnd:
		if err := img.f.Truncate(newEnd); err != nil {
			return ioError("truncate", newEnd, err)
		}
		if err := img.f.Sync(); err != nil {
			return ioError("sync", 0, err)
		}
	case newSize > oldFooter:
		if err := img.zeroAndSync(oldFooter, min(newSize, oldEnd)-oldFooter); err != nil {
			return err
		}
	}
	img.footerMu.Lock()
	img.footer = ft
	img.footerMu.Unlock()
	x.size, x.footerOff = newSize, newSize
	return nil
}

// zeroAndSync writes zeros over [off, off+n) of the image file and syncs.
func (img *Image) zeroAndSync(off, n int64) error {
	var dirty atomic.Bool
	if err := writeZeros(img.f, off, n, &dirty); err != nil {
		return err
	}
	if err := img.f.Sync(); err != nil {
		return ioError("sync", 0, err)
	}
	return nil
}
