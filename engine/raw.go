package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// RawDisk is a Disk over a raw disk image or a block device: the file's
// bytes are the disk's bytes. It is what convert reads raw images and
// physical disks through (Virtual Server's linked disks were physical
// disks), and what it writes raw images with.
//
// Its extent map comes from the host (SEEK_DATA/SEEK_HOLE): holes in a
// sparse file are ExtentHole. A block device, or a file system that
// cannot tell, reports everything as data. Zero with ZeroMayDeallocate
// and Trim punch holes where the host can, and write zeros where it
// cannot.
type RawDisk struct {
	f        *os.File
	name     string
	size     int64
	readOnly bool
	device   bool
	unlock   func()

	// dirty is set by every write and cleared by a flush, so a flush with
	// nothing to do costs no sync.
	dirty  atomic.Bool
	closed atomic.Bool
}

var _ Disk = (*RawDisk)(nil)

// OpenRaw opens a raw image file or a block device at path, taking an OS
// lock as Open does (shared for reading, exclusive for writing). A block
// device's size is found by seeking to its end.
func OpenRaw(path string, readOnly bool) (*RawDisk, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := OpenChecked(path, flag, true)
	if err != nil {
		return nil, err
	}
	unlock, err := lockFile(f, path, !readOnly)
	if err != nil {
		f.Close()
		return nil, err
	}
	d, err := newRaw(f, path, readOnly)
	if err != nil {
		unlock()
		f.Close()
		return nil, err
	}
	d.unlock = unlock
	return d, nil
}

// CreateRaw makes a new raw image of size bytes at path, which must not
// exist, and returns it open for writing. The file is sparse: it reads
// as zeros and holds no data until written.
func CreateRaw(path string, size int64) (*RawDisk, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	d, err := NewRawFile(f, path, size)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return d, nil
}

// NewRawFile sizes the empty regular file f to size bytes and returns it
// as a writable RawDisk that owns f. It takes no lock: the caller made f
// and nobody else knows it (a temporary file).
func NewRawFile(f *os.File, name string, size int64) (*RawDisk, error) {
	if size < 0 {
		return nil, fmt.Errorf("vhd: raw image size %d: must not be negative", size)
	}
	if err := f.Truncate(size); err != nil {
		return nil, fmt.Errorf("%s: size to %d bytes: %w", name, size, err)
	}
	d, err := newRaw(f, name, false)
	if err != nil {
		return nil, err
	}
	d.dirty.Store(true) // the new size is not durable yet
	return d, nil
}

func newRaw(f *os.File, name string, readOnly bool) (*RawDisk, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	d := &RawDisk{f: f, name: name, readOnly: readOnly, unlock: func() {}}
	if st.Mode().IsRegular() {
		d.size = st.Size()
		return d, nil
	}
	d.device = true
	if d.size, err = f.Seek(0, io.SeekEnd); err != nil {
		return nil, fmt.Errorf("%s: find the size of the device: %w", name, err)
	}
	return d, nil
}

// Name is the path the disk was opened under.
func (d *RawDisk) Name() string { return d.name }

// IsDevice reports whether the disk is a block device.
func (d *RawDisk) IsDevice() bool { return d.device }

// Size implements Disk.
func (d *RawDisk) Size() int64 { return d.size }

// ReadOnly implements Disk.
func (d *RawDisk) ReadOnly() bool { return d.readOnly }

// ReadAt implements Disk.
func (d *RawDisk) ReadAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if off < 0 {
		return 0, ErrOutOfRange
	}
	if off >= d.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > d.size-off {
		p, eof = p[:d.size-off], io.EOF
	}
	n, err := d.f.ReadAt(p, off)
	if err != nil {
		if errors.Is(err, io.EOF) {
			// The file shrank under us: that is not the end of the disk.
			return n, fmt.Errorf("%s: read at %#x: file is shorter than when opened (%d bytes)", d.name, off+int64(n), d.size)
		}
		return n, fmt.Errorf("%s: read at %#x: %w", d.name, off, err)
	}
	return n, eof
}

// WriteAt implements Disk. A raw disk never grows.
func (d *RawDisk) WriteAt(p []byte, off int64) (int, error) {
	if err := d.writable(off, int64(len(p))); err != nil {
		return 0, err
	}
	d.dirty.Store(true)
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("%s: write at %#x: %w", d.name, off, err)
	}
	return n, nil
}

func (d *RawDisk) writable(off, n int64) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if d.readOnly {
		return ErrReadOnly
	}
	return checkRange(off, n, d.size)
}

// Zero implements Disk. ZeroMayDeallocate punches a hole; with
// ZeroKeepAllocated the range is zeroed in place (FALLOC_FL_ZERO_RANGE).
// Either falls back to writing zeros where the host cannot.
func (d *RawDisk) Zero(off, n int64, mode ZeroMode) error {
	if err := d.writable(off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	d.dirty.Store(true)
	how := unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	if mode == ZeroKeepAllocated {
		how = unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE
	}
	if !d.device {
		err := unix.Fallocate(int(d.f.Fd()), uint32(how), off, n)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%s: zero %#x+%#x: %w", d.name, off, n, err)
		}
	}
	var dirty atomic.Bool
	if err := writeZeros(OSFile(d.f), off, n, &dirty); err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return nil
}

// Trim implements Disk: a raw disk is a base disk, so a trimmed range
// reads as zeros, and its space is given back where the host can.
func (d *RawDisk) Trim(off, n int64) error { return d.Zero(off, n, ZeroMayDeallocate) }

// Extents implements Disk. Holes the host reports are ExtentHole (zeros,
// no space); everything else is ExtentData. The host's answer is a hint:
// where it cannot tell, the whole range is data.
func (d *RawDisk) Extents(off, n int64) ([]Extent, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	if err := checkRange(off, n, d.size); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	all := []Extent{{Off: off, Len: n, State: ExtentData}}
	if d.device {
		return all, nil
	}
	fd := int(d.f.Fd())
	var list []Extent
	end := off + n
	for pos := off; pos < end; {
		start, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) || err == nil && start >= end {
			// No data from pos on (ENXIO), or none before end.
			list = appendExtent(list, Extent{Off: pos, Len: end - pos, State: ExtentHole})
			break
		}
		if err != nil {
			return all, nil
		}
		hole, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil || hole <= start {
			return all, nil
		}
		list = appendExtent(list, Extent{Off: pos, Len: start - pos, State: ExtentHole})
		hole = min(hole, end)
		list = appendExtent(list, Extent{Off: start, Len: hole - start, State: ExtentData})
		pos = hole
	}
	return list, nil
}

// Flush implements Disk: fdatasync, which for a block device also
// flushes the device's write cache.
func (d *RawDisk) Flush() error {
	if d.closed.Load() {
		return ErrClosed
	}
	if d.readOnly || !d.dirty.Swap(false) {
		return nil
	}
	if err := unix.Fdatasync(int(d.f.Fd())); err != nil {
		d.dirty.Store(true)
		return fmt.Errorf("%s: sync: %w", d.name, err)
	}
	return nil
}

// Close flushes a writable disk and releases the file and its lock.
func (d *RawDisk) Close() error {
	if d.closed.Load() {
		return ErrClosed
	}
	err := d.Flush()
	d.closed.Store(true)
	d.unlock()
	if cerr := d.f.Close(); err == nil {
		err = cerr
	}
	return err
}
