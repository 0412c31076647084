package service

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"vhdkit/engine"
)

// Signals. The first SIGINT or SIGTERM asks for an orderly stop: the
// command's context ends (signal.NotifyContext in main) and Run tears
// down in order, which waits for clients up to the grace period and
// for the disks as long as they take. A second one says the user will
// not wait: OnSecondSignal calls the command's handler, which calls
// Abandon and exits.

// AbandonFlushTimeout bounds the flush Abandon attempts: the user asked
// to stop now, and a disk that hangs must not hold the exit.
const AbandonFlushTimeout = 10 * time.Second

// OnSecondSignal calls fn on the second SIGINT or SIGTERM the process
// receives from now on (both arrive here and at main's context too, so
// this counts them itself). stop ends the watch.
func OnSecondSignal(fn func()) (stop func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for seen := 0; ; {
			select {
			case <-ch:
				if seen++; seen == 2 {
					fn()
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

// Abandon is the way out when the user will not wait for an orderly
// stop: it flushes every writable disk at once (waiting at most
// timeout), detaches the FUSE mounts lazily and removes the socket
// files. It neither waits for clients nor closes anything: the process
// exits next, and the disks are as after any crash, with every write
// before the flush durable.
func (h *Host) Abandon(timeout time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	disks := map[string]engine.Disk{}
	for name, ex := range h.exports {
		disks[name] = ex.Disk
	}
	err := flushAll(disks, timeout)
	for _, ex := range h.exports {
		if ex.fuse != nil {
			syscall.Unmount(ex.fuse.dir, syscall.MNT_DETACH)
		}
	}
	removeFiles(h.sockets)
	return err
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
