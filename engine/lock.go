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
// want: one writer per image, even inside one process. QEMU's byte-range
// locks are taken too (lock_qemu.go), so QEMU and vhd refuse each
// other's writers the same way. A refusal is a *LockedError naming the
// holder when it can: the message names no flag, since which one helps
// (if any) depends on the command.
func lockFile(f *os.File, path string, write bool) (func(), error) {
	how := unix.LOCK_SH
	if write {
		how = unix.LOCK_EX
	}
	err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		pid, cmd := lockHolder(f)
		return nil, &LockedError{Path: path, Write: write, PID: pid, Command: cmd}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: lock: %w", path, err)
	}
	unflock := func() { unix.Flock(int(f.Fd()), unix.LOCK_UN) }
	unqemu, err := qemuLock(f, write)
	if errors.Is(err, errQEMUConflict) {
		unflock()
		pid, cmd := ofdHolder(f, write)
		return nil, &LockedError{Path: path, Write: write, PID: pid, Command: cmd}
	}
	if err != nil {
		unflock()
		return nil, fmt.Errorf("%s: lock: %w", path, err)
	}
	return func() { unqemu(); unflock() }, nil
}

// shareLock returns a function that turns the exclusive lock on f into a
// shared one, in place (flock converts the lock of the same open file
// description; there is no moment without a lock).
func shareLock(f *os.File, path string) func() error {
	return func() error {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
			return fmt.Errorf("%s: share lock: %w", path, err)
		}
		qemuShare(f)
		return nil
	}
}

// CheckLock reports whether path could be locked now for writing (write)
// or reading, without keeping the lock: nil if so, a *LockedError naming
// the holder if another open holds a conflicting lock.
func CheckLock(path string, write bool) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	unlock, err := lockFile(f, path, write)
	if err != nil {
		return err
	}
	unlock()
	return nil
}
