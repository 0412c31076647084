package engine

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// fixed is the layout of a fixed image: the disk's bytes, then the footer.
type fixed struct {
	img  *Image
	f    File
	size int64
	// footerOff is where the footer starts: the file's last 512 bytes,
	// or its last 511 for an old Virtual PC footer. It is size unless
	// the file holds bytes between the data and the footer (which check
	// reports); the footer is always rewritten where it was found, so
	// it stays the file's last sector.
	footerOff int64
	// dirty is set after every write returns and cleared by a flush
	// before it syncs, so a flush with nothing to do costs no sync. Set
	// before the write, a flush running meanwhile could clear it and sync
	// without the write, and the next flush would skip its sync.
	dirty atomic.Bool
	// flushMu lets one flush run at a time: a flush that finds dirty
	// clear must not return while another's sync is still under way.
	flushMu sync.Mutex
	// failed holds the error of a failed sync. After one, what reached
	// the disk is unknown: Linux may have dropped the unsynced pages
	// while reads still show them, and a second sync reports success
	// without writing them. So every later flush and write fails with
	// it, as in the sparse layout; reopening the image recovers.
	failed atomic.Pointer[error]
}

// usable refuses writes once a flush has failed.
func (x *fixed) usable() error {
	if e := x.failed.Load(); e != nil {
		return *e
	}
	return nil
}

func openFixed(img *Image, fileSize int64) (*fixed, error) {
	size := int64(img.footer.CurrentSize)
	dataEnd := fileSize - FooterSize
	if img.footer.Short {
		dataEnd = fileSize - footerSize511
	}
	if dataEnd < size {
		return nil, corrupt("file", "", fileSize, "is %d bytes, too short for a fixed disk of %d bytes plus its footer (truncated?)", fileSize, size)
	}
	return &fixed{img: img, f: img.f, size: size, footerOff: dataEnd}, nil
}

func (x *fixed) readAt(p []byte, off int64) error {
	if _, err := x.f.ReadAt(p, off); err != nil && !(errors.Is(err, io.EOF) && off+int64(len(p)) <= x.size) {
		return ioError("read", off, err)
	}
	return nil
}

func (x *fixed) writeAt(p []byte, off int64) error {
	if err := x.usable(); err != nil {
		return err
	}
	_, err := x.f.WriteAt(p, off)
	x.dirty.Store(true)
	if err != nil {
		return ioError("write", off, err)
	}
	return nil
}

func (x *fixed) zero(off, n int64, mode ZeroMode) error {
	if err := x.usable(); err != nil {
		return err
	}
	if mode == ZeroMayDeallocate {
		return x.trim(off, n)
	}
	return writeZeros(x.f, off, n, &x.dirty)
}

// trim punches a hole where the host can, else writes zeros: a fixed
// disk's trimmed range must still read as zeros.
func (x *fixed) trim(off, n int64) error {
	if err := x.usable(); err != nil {
		return err
	}
	err := x.f.PunchHole(off, n)
	if errors.Is(err, ErrUnsupported) {
		return writeZeros(x.f, off, n, &x.dirty)
	}
	x.dirty.Store(true)
	return err
}

func (x *fixed) flush() error {
	x.flushMu.Lock()
	defer x.flushMu.Unlock()
	if err := x.usable(); err != nil {
		return err
	}
	if !x.dirty.Swap(false) {
		return nil
	}
	// The footer's modification stamp (see Image.stampFooter) goes in
	// with the data it stamps, over the footer where it is. Usually one
	// sector-aligned sector, which storage writes whole, so the footer
	// holds the old stamp or the new. (An old 511-byte footer is
	// written back as a 512-byte one, one byte longer, so the file grows
	// by one byte and the new footer is its last 512.)
	if raw, ok := x.img.stampFooter(); ok {
		if _, err := x.f.WriteAt(raw[:], x.footerOff); err != nil {
			x.dirty.Store(true)
			return ioError("write footer", x.footerOff, err)
		}
	}
	if err := x.f.Sync(); err != nil {
		err = fmt.Errorf("%w (image is now read-only until reopened)", ioError("sync", 0, err))
		x.failed.CompareAndSwap(nil, &err)
		return err
	}
	return nil
}

// extents reports the host file's holes as zero extents where the file
// can tell them (SEEK_DATA), so a sparse fixed image converts sparsely.
func (x *fixed) extents(off, n int64) ([]Extent, error) {
	ds, ok := x.f.(dataSeeker)
	if !ok {
		return []Extent{{Off: off, Len: n, State: ExtentData}}, nil
	}
	var list []Extent
	end := off + n
	for pos := off; pos < end; {
		start, dend, err := ds.NextData(pos)
		if errors.Is(err, io.EOF) || err == nil && start >= end {
			list = appendExtent(list, Extent{Off: pos, Len: end - pos, State: ExtentZero})
			break
		}
		if err != nil {
			return []Extent{{Off: off, Len: n, State: ExtentData}}, nil
		}
		if start > pos {
			list = appendExtent(list, Extent{Off: pos, Len: start - pos, State: ExtentZero})
		}
		dend = min(dend, end)
		list = appendExtent(list, Extent{Off: start, Len: dend - start, State: ExtentData})
		pos = dend
	}
	return list, nil
}

// zeroBuf is a shared source of zeros for writes; never written to.
var zeroBuf = make([]byte, 1<<20)

// writeZeros writes zeros over [off, off+n) and sets dirty after each
// write (not before: see fixed.dirty).
func writeZeros(f File, off, n int64, dirty *atomic.Bool) error {
	for n > 0 {
		c := min(n, int64(len(zeroBuf)))
		_, err := f.WriteAt(zeroBuf[:c], off)
		dirty.Store(true)
		if err != nil {
			return ioError("write zeros", off, err)
		}
		off += c
		n -= c
	}
	return nil
}
