package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// FolderError says why a new file cannot be made where it was asked
// for: its folder is missing, is not a folder, or is not writable. It
// names the folder, never the temporary name the file would be written
// under first.
type FolderError struct {
	Dir  string // absolute
	File string // the new file's name, as given
	Err  error  // fs.ErrNotExist, unix.ENOTDIR or fs.ErrPermission
}

func (e *FolderError) Error() string {
	switch {
	case errors.Is(e.Err, fs.ErrNotExist):
		return fmt.Sprintf("folder %s does not exist: create it first, or choose another place for %s", e.Dir, e.File)
	case errors.Is(e.Err, unix.ENOTDIR):
		return fmt.Sprintf("%s is not a folder: choose another place for %s", e.Dir, e.File)
	}
	return fmt.Sprintf("folder %s is not writable: choose another place for %s, or run as a user who may write there", e.Dir, e.File)
}

func (e *FolderError) Unwrap() error { return e.Err }

// CheckNewFileFolder checks that the folder the new file path is to be
// made in exists, is a folder and can be written, before anything is
// made (every command that writes a new file calls it: create,
// snapshot, convert, merge --to, backup pull, a live snapshot). Failures
// are FolderErrors; a path that exists, or a folder it cannot even look
// at, is left to the creation to report.
func CheckNewFileFolder(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return err
	}
	fe := &FolderError{Dir: dir, File: filepath.Base(path)}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fe.Err = fs.ErrNotExist
	case errors.Is(err, unix.ENOTDIR), err == nil && !fi.IsDir():
		fe.Dir, fe.Err = nearestNonFolder(dir), unix.ENOTDIR
	case err != nil:
		return nil
	case unix.Access(dir, unix.W_OK|unix.X_OK) != nil:
		fe.Err = fs.ErrPermission
	default:
		return nil
	}
	return fe
}

// nearestNonFolder is the first path on the way to dir that exists and
// is not a folder (/etc/passwd for /etc/passwd/sub), else dir.
func nearestNonFolder(dir string) string {
	for p := dir; ; {
		if fi, err := os.Stat(p); err == nil {
			if !fi.IsDir() {
				return p
			}
			return dir
		}
		parent := filepath.Dir(p)
		if parent == p {
			return dir
		}
		p = parent
	}
}
