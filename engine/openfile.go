package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNotFile is matched by the error OpenChecked returns for a path that
// names something other than an image file: a FIFO, a socket, a
// character device (/dev/null), a folder.
var ErrNotFile = errors.New("vhd: not an image file")

// FileKindError says what a path named instead of an image file.
type FileKindError struct {
	Path string
	Kind string // "named pipe (FIFO)", "socket", "character device", ...
	// Devices is set when a block device would have been accepted.
	Devices bool
}

func (e *FileKindError) Error() string {
	want := "a regular file"
	if e.Devices {
		want = "a regular file or a block device"
	}
	return fmt.Sprintf("%s is a %s, not %s", e.Path, e.Kind, want)
}

// Is makes errors.Is(err, ErrNotFile) true.
func (e *FileKindError) Is(target error) bool { return target == ErrNotFile }

// OpenChecked opens path for reading or writing an image in place (flag
// is os.O_RDONLY or os.O_RDWR, plus unix.O_NOFOLLOW where a symlink must
// not be followed) and returns it only if it is a regular file, or, when
// devices is set, a block device. Every open of an existing image or raw
// disk goes through it, so no command blocks on what the path names:
//
//   - the path is looked at first, so a character device (a tape that
//     rewinds, a terminal) is never opened at all;
//   - the open is O_NONBLOCK, so a FIFO swapped in after that look cannot
//     block it (an open of a FIFO with no writer would wait, deaf to
//     signals, for ever), and a socket fails it at once;
//   - the kind is checked again on the open descriptor, so the file read
//     is the file checked, whatever was renamed over the path meanwhile.
//
// The descriptor is put back in blocking mode for ordinary I/O.
func OpenChecked(path string, flag int, devices bool) (*os.File, error) {
	stat := os.Stat
	if flag&unix.O_NOFOLLOW != 0 {
		stat = os.Lstat
	}
	st, err := stat(path)
	if err != nil {
		return nil, err
	}
	if err := checkFileKind(path, st.Mode(), devices); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	// Blocking again before os.NewFile sees it, so Go treats it as the
	// plain file it is about to be checked to be; nothing below reads it.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if st, err = f.Stat(); err != nil {
		f.Close()
		return nil, err
	}
	if err := checkFileKind(path, st.Mode(), devices); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkFileKind accepts a regular file, and a block device if devices.
func checkFileKind(path string, m fs.FileMode, devices bool) error {
	if m.IsRegular() || devices && m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0 {
		return nil
	}
	return &FileKindError{Path: path, Kind: fileKind(m), Devices: devices}
}

// fileKind names a file mode's type for a message.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m.IsDir():
		return "folder"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	}
	return "special file"
}
