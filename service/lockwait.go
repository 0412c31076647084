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
// server to exit and then for the image's lock (the engine's flock) to
// be free: only then is everything flushed and closed.

// WaitUnlocked waits until no process holds a lock on path (its server
// has closed it), up to timeout. It takes the same flock the engine
// takes, on a descriptor of its own, and lets go at once.
func WaitUnlocked(ctx context.Context, path string, timeout time.Duration) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return unix.Flock(int(f.Fd()), unix.LOCK_UN)
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%s: lock: %w", path, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still in use after %v", path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitServer waits for a mount's server to exit and for its image (and
// undo disk) to be unlocked, all within timeout.
func waitServer(ctx context.Context, st *MountState, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for st.PID > 0 && ProcessAlive(st.PID) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the server (pid %d) is still running %v after the unmount; its log: %s", st.PID, timeout, st.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	files := []string{st.Image}
	if st.UndoDisk != "" {
		files = append(files, st.UndoDisk)
	}
	for _, f := range files {
		if err := WaitUnlocked(ctx, f, time.Until(deadline)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
