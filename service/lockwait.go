package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Waiting for a server to let go. Unmounting returns before the server
// behind the mount has flushed and closed the image: the kernel only
// tells it the mount is gone. Committing or discarding the undo disk
// then would race the server's last writes, so umount waits for the
// server to exit: only then is everything flushed and closed. When its
// pid is unknown, it waits for the image's lock (the engine's flock) to
// be free instead.

// WaitUnlocked waits until no process holds a lock on path (its server
// has closed it), up to timeout. It takes the same flock the engine
// takes, on a descriptor of its own, and lets go at once.
func WaitUnlocked(ctx context.Context, path string, timeout time.Duration) error {
	return waitUnlocked(ctx, path, time.Now().Add(timeout), timeout)
}

// waitUnlocked is WaitUnlocked until deadline; a failure says timeout,
// the whole wait, rounded.
func waitUnlocked(ctx context.Context, path string, deadline time.Time, timeout time.Duration) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return unix.Flock(int(f.Fd()), unix.LOCK_UN)
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%s: lock: %w", path, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still in use after %v", path, timeout.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitServer waits, within timeout, for a mount's own server (st.PID)
// to exit: its exit closes the image and undo disk, everything flushed.
// Not the image's lock: another mount of the same image (read-only ones
// share it) holds that as long as it likes. Only a mount whose pid is
// unknown (its state was lost) is waited for by the lock instead.
func waitServer(ctx context.Context, st *MountState, timeout time.Duration) error {
	if st.PID <= 0 {
		return waitFilesUnlocked(ctx, st, timeout)
	}
	deadline := time.Now().Add(timeout)
	for ProcessAlive(st.PID) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the server (pid %d) is still running %v after the unmount; its log: %s", st.PID, timeout.Round(time.Millisecond), st.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// waitFilesUnlocked waits for the image and undo disk of a mount whose
// server is unknown to be unlocked.
func waitFilesUnlocked(ctx context.Context, st *MountState, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	files := []string{st.Image}
	if st.UndoDisk != "" {
		files = append(files, st.UndoDisk)
	}
	for _, f := range files {
		err := waitUnlocked(ctx, f, deadline, timeout)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
