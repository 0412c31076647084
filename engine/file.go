package engine

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// File is everything the engine asks of the file that holds an image. All
// image I/O goes through it, so tests can swap in a file that injects
// errors or simulates power loss (see package crashfile).
//
// WriteAt data is volatile until Sync returns; Sync makes every earlier
// WriteAt, Truncate and PunchHole durable. That is the whole contract the
// durability argument in image.go relies on.
type File interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
	// PunchHole deallocates [off, off+n) so it reads as zeros and gives the
	// space back to the host; it returns ErrUnsupported where it cannot.
	PunchHole(off, n int64) error
	Close() error
}

// ErrUnsupported is returned by File methods a file cannot provide.
var ErrUnsupported = errors.New("vhd: operation not supported by the file")

// dataSeeker is implemented by files that can report holes (SEEK_DATA).
type dataSeeker interface {
	// NextData returns the start and end of the first data region at or
	// after off, or io.EOF if there is none.
	NextData(off int64) (start, end int64, err error)
}

// osFile is a File on an *os.File.
type osFile struct {
	f *os.File
}

// OSFile wraps an open *os.File as a File.
func OSFile(f *os.File) File { return &osFile{f: f} }

func (o *osFile) ReadAt(p []byte, off int64) (int, error)  { return o.f.ReadAt(p, off) }
func (o *osFile) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, off) }
func (o *osFile) Sync() error                              { return unix.Fdatasync(int(o.f.Fd())) }
func (o *osFile) Truncate(size int64) error                { return o.f.Truncate(size) }
func (o *osFile) Close() error                             { return o.f.Close() }

func (o *osFile) Size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode().IsRegular() {
		return st.Size(), nil
	}
	// A block device reports size 0 through stat; seeking to the end works.
	return o.f.Seek(0, io.SeekEnd)
}

func (o *osFile) PunchHole(off, n int64) error {
	err := unix.Fallocate(int(o.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return ErrUnsupported
	}
	if err != nil {
		return fmt.Errorf("punch hole at %#x+%#x: %w", off, n, err)
	}
	return nil
}

func (o *osFile) NextData(off int64) (int64, int64, error) {
	fd := int(o.f.Fd())
	start, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return 0, 0, io.EOF
	}
	if err != nil {
		return 0, 0, err
	}
	end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, err
	}
	return start, end, nil
}
