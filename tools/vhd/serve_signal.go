package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"vhdkit/engine"
)

// emergencyFlushTimeout bounds the flush a second signal attempts: the
// user asked to stop now, and a disk that hangs must not hold the exit.
const emergencyFlushTimeout = 10 * time.Second

// emergency is what vhd serve does on a second SIGINT or SIGTERM. The
// first one (main's context) starts the orderly shutdown, which waits
// for clients up to the grace period and for the disks as long as they
// take; a second one says the user will not wait. It flushes what it
// can, detaches the FUSE mounts, removes the sockets and exits at once.
type emergency struct {
	stderr io.Writer

	mu sync.Mutex
	// disks to flush, mounts and sockets to clean up; guarded by mu (set
	// while the watcher runs).
	disks   map[string]engine.Disk
	mounts  []fuseMount
	sockets []string
}

// watch starts waiting for the second signal; stop ends the wait.
func (em *emergency) watch() (stop func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		// Count the signals here, not main's context: the first one
		// arrives on both.
		for seen := 0; ; {
			select {
			case <-ch:
				if seen++; seen == 2 {
					em.exit()
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// addDisk, setMounts and setSockets record what exit cleans up.
func (em *emergency) addDisk(name string, d engine.Disk) {
	em.mu.Lock()
	defer em.mu.Unlock()
	if em.disks == nil {
		em.disks = map[string]engine.Disk{}
	}
	em.disks[name] = d
}

func (em *emergency) setMounts(m []fuseMount) {
	em.mu.Lock()
	defer em.mu.Unlock()
	em.mounts = m
}

func (em *emergency) setSockets(s []string) {
	em.mu.Lock()
	defer em.mu.Unlock()
	em.sockets = s
}

func (em *emergency) exit() {
	fmt.Fprintln(em.stderr, "vhd serve: second signal: flushing the images and exiting without waiting for clients")
	em.mu.Lock()
	defer em.mu.Unlock()
	if err := flushAll(em.disks, emergencyFlushTimeout); err != nil {
		fmt.Fprintf(em.stderr, "vhd serve: %v; writes since the last flush may be lost: run 'vhd check' on the images\n", err)
	}
	for _, m := range em.mounts {
		syscall.Unmount(m.dir, syscall.MNT_DETACH)
	}
	for _, s := range em.sockets {
		os.Remove(s)
	}
	os.Exit(exitFailed)
}

// flushAll flushes every writable disk at once and waits at most timeout
// for them.
func flushAll(disks map[string]engine.Disk, timeout time.Duration) error {
	errs := make(chan error, len(disks))
	n := 0
	for name, d := range disks {
		if d.ReadOnly() {
			continue
		}
		n++
		go func() {
			if err := d.Flush(); err != nil {
				errs <- fmt.Errorf("flush of %s failed: %w", name, err)
				return
			}
			errs <- nil
		}()
	}
	limit := time.After(timeout)
	var first error
	for range n {
		select {
		case err := <-errs:
			if first == nil {
				first = err
			}
		case <-limit:
			return fmt.Errorf("the flush did not finish in %v", timeout)
		}
	}
	return first
}
