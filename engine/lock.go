package engine

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockFile takes a non-blocking OS lock on f: exclusive for a writer,
// shared for a reader. flock locks belong to the open file description,
// so a second open in the same process is refused too, which is what we
// want: one writer per image, even inside one process.
func lockFile(f *os.File, path string, write bool) (func(), error) {
	how := unix.LOCK_SH
	if write {
		how = unix.LOCK_EX
	}
	err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		if write {
			return nil, fmt.Errorf("%s: %w: another process (or open) has it open; close it first, or open read-only", path, ErrLocked)
		}
		return nil, fmt.Errorf("%s: %w: another process (or open) has it open for writing; use --force-share to read it anyway", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: lock: %w", path, err)
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN) }, nil
}
