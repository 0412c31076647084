package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"

	"vhdkit/engine"
	"vhdkit/nbdserve"
)

// Host is what one long-running process serves: open disks (exports),
// the NBD server and its listeners, FUSE mounts of the disks and the
// filesystems mounted from them, and the state files that say so. It is
// set up (AddExport, ListenUnix, ListenTCP, SaveState), then Run serves
// until its context ends, a listener fails or, with StopOnUnmount, a
// FUSE mount is unmounted from outside; Run then tears everything down
// in one order (see doc.go and teardown). Exports can be added and
// removed while Run runs.
type Host struct {
	nbd           *nbdserve.Server
	log           *slog.Logger
	stopOnUnmount bool

	mu sync.Mutex
	// exports are the disks served, by name; pending the names being
	// added or removed; listeners and sockets (the unix socket files the
	// host made) are served by Run and removed at teardown; states are
	// state files to remove last. Guarded by mu.
	exports   map[string]*Export
	pending   map[string]bool
	listeners []net.Listener
	sockets   []string
	states    []string
	phase     phase
	// control is the control socket, if set up (ListenControl).
	control *controlServer
	// quiescer freezes an export's users for a backup (quiesce.go).
	quiescer Quiescer

	// unmounted is closed when a FUSE mount goes away from outside
	// (StopOnUnmount ends Run then).
	unmounted     chan struct{}
	unmountedOnce sync.Once
	// removals counts RemoveExport calls under way, which teardown waits
	// for.
	removals sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
	// summary is what stopping did (host_summary.go). Guarded by mu.
	summary StopSummary
}

type phase int

const (
	setup phase = iota
	running
	stopping
)

// Config sets a Host up.
type Config struct {
	// NBD is the NBD server, with its limits, TLS and Default set; nil
	// means one with the defaults. The host adds the exports: leave its
	// Exports empty. Listeners and exports may be none (a mount server).
	NBD *nbdserve.Server
	// Logger receives what the host and its servers log; silent if nil.
	Logger *slog.Logger
	// StopOnUnmount ends Run when a FUSE mount is unmounted from outside
	// (vhd umount ends a mount server this way).
	StopOnUnmount bool
}

// New makes a host with nothing served yet.
func New(cfg Config) *Host {
	h := &Host{
		nbd:           cfg.NBD,
		log:           cfg.Logger,
		stopOnUnmount: cfg.StopOnUnmount,
		exports:       map[string]*Export{},
		pending:       map[string]bool{},
		unmounted:     make(chan struct{}),
	}
	if h.nbd == nil {
		h.nbd = &nbdserve.Server{}
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.nbd.Logger == nil {
		h.nbd.Logger = h.log
	}
	return h
}

// Export is one disk a host serves. Its fields are set when AddExport
// returns and do not change.
type Export struct {
	Name        string
	Description string
	Disk        engine.Disk
	// Mountpoint is where the disk is mounted over FUSE; empty if not.
	Mountpoint string
	// Filesystems are the filesystems mounted from its partitions.
	Filesystems []FSMount
	// Undo: the disk is a chain on an image's undo disk
	// (chains.OpenUndo), which can be committed or discarded live.
	Undo bool
	// ViewOf names the export whose frozen layer this read-only export
	// shows (chains.Chain.View), or is empty.
	ViewOf string

	fuse *fuseMount
}

// label names the export in messages: its description (the image), or
// its name.
func (e *Export) label() string {
	if e.Description != "" {
		return e.Description
	}
	return e.Name
}

// ExportOptions say how a disk is served besides NBD.
type ExportOptions struct {
	// Description is shown by NBD clients (nbdinfo) and names the disk
	// in messages.
	Description string
	// FUSE, if set, also mounts the disk over FUSE.
	FUSE *FUSEOptions
	// Undo and ViewOf describe the disk (see Export), for status.
	Undo   bool
	ViewOf string
}

// AddExport serves disk under name: over NBD at once (on every listener,
// while Run runs too) and, if asked, over FUSE, with the filesystems
// inside. From success on the host owns disk and closes it at teardown
// or RemoveExport; on failure it stays the caller's, and whatever was
// mounted for it is undone.
func (h *Host) AddExport(ctx context.Context, name string, disk engine.Disk, opts ExportOptions) (*Export, error) {
	if err := h.reserve(name); err != nil {
		return nil, err
	}
	defer h.release(name)
	ex := &Export{Name: name, Description: opts.Description, Disk: disk, Undo: opts.Undo, ViewOf: opts.ViewOf}
	if opts.FUSE != nil {
		if err := h.mountFUSE(ctx, ex, *opts.FUSE); err != nil {
			return nil, err
		}
	}
	h.mu.Lock()
	err := errHostStopping
	if h.phase < stopping {
		err = h.nbd.AddExport(&nbdserve.Export{Name: name, Description: ex.Description, Disk: disk})
	}
	if err == nil {
		h.exports[name] = ex
	}
	h.mu.Unlock()
	if err != nil {
		h.unmountFUSE(ex)
		removeMadeDirs(ex.fuse)
		return nil, err
	}
	return ex, nil
}

var errHostStopping = fmt.Errorf("service: %w: nothing can be added any more", ErrStopping)

// reserve claims name for an export being added.
func (h *Host) reserve(name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.phase >= stopping:
		return errHostStopping
	case h.exports[name] != nil, h.pending[name]:
		return fmt.Errorf("service: an export named %q exists already: remove it first or choose another name: %w", name, ErrExportExists)
	}
	h.pending[name] = true
	return nil
}

func (h *Host) release(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.pending, name)
}

// RemoveExport stops serving an export and closes its disk: NBD clients
// of it answer their requests in flight, flush and are disconnected
// (nbdserve.Server.RemoveExport; ctx cuts their grace short), then its
// filesystems and FUSE mount are unmounted, the disk flushed and closed,
// and folders made for the mount removed.
func (h *Host) RemoveExport(ctx context.Context, name string) error {
	h.mu.Lock()
	ex := h.exports[name]
	if ex == nil || h.phase >= stopping {
		h.mu.Unlock()
		return fmt.Errorf("service: no export named %q: %w", name, ErrNoExport)
	}
	delete(h.exports, name)
	h.pending[name] = true // until the disk is closed
	h.removals.Add(1)
	h.mu.Unlock()
	defer h.removals.Done()
	defer h.release(name)
	_, nerr := h.nbd.RemoveExport(ctx, name)
	ferr := h.unmountFUSE(ex)
	cerr := closeDisk(ex)
	removeMadeDirs(ex.fuse)
	return errors.Join(nerr, ferr, cerr)
}

func closeDisk(ex *Export) error {
	if err := ex.Disk.Close(); err != nil {
		return fmt.Errorf("close %s: %w", ex.label(), err)
	}
	return nil
}

// ExportNames lists the exports, sorted.
func (h *Host) ExportNames() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.exports))
	for n := range h.exports {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LookupExport returns the export named name.
func (h *Host) LookupExport(name string) (*Export, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ex, ok := h.exports[name]
	return ex, ok
}

// SaveState writes a mount's state file; teardown removes it, last.
func (h *Host) SaveState(st *MountState) error {
	if err := st.Save(); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.states = append(h.states, st.Mountpoint)
	return nil
}

// Run serves until ctx ends, a listener fails or (StopOnUnmount) a FUSE
// mount is unmounted from outside, then tears everything down (see
// teardown) and returns what failed. It runs once.
func (h *Host) Run(ctx context.Context) error {
	h.mu.Lock()
	if h.phase != setup {
		h.mu.Unlock()
		return errors.New("service: Run called twice, or after Close")
	}
	h.phase = running
	listeners := h.listeners
	h.mu.Unlock()

	// Serving ends when Run decides, not when ctx does: the listeners
	// share the connections, so one failing stops them all.
	serveCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make([]error, len(listeners))
	ended := make(chan struct{}, len(listeners))
	controlFailed := make(chan error, 1)
	h.serveControl(controlFailed)
	var wg sync.WaitGroup
	for i, l := range listeners {
		wg.Go(func() {
			errs[i] = h.nbd.Serve(serveCtx, l)
			ended <- struct{}{}
		})
	}
	why := "interrupted"
	var controlErr error
	select {
	case <-ctx.Done():
	case <-ended:
		why = "a listener stopped"
	case <-h.unmounted:
		why = "unmounted"
	case err := <-controlFailed:
		why, controlErr = "the control socket failed", err
	}
	h.log.Info("vhd: stopping", "why", why)
	h.noteStop(why)
	// No live change may start or go on while the exports drain.
	h.stopControl()
	cancel()
	wg.Wait()
	return errors.Join(errors.Join(errs...), controlErr, h.stop())
}

// Close tears down a host that never ran (its setup failed half-way);
// after Run it does nothing and returns what Run's teardown returned.
// It must not be called while Run runs: end Run's context instead.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.phase == running {
		h.mu.Unlock()
		return errors.New("service: Close while Run runs: end Run's context instead")
	}
	h.mu.Unlock()
	return h.stop()
}

func (h *Host) stop() error {
	h.stopOnce.Do(func() { h.stopErr = h.teardown() })
	return h.stopErr
}

// teardown releases everything in the order doc.go argues:
//
//  0. The control socket takes no more requests, and its running jobs
//     (merges) are cancelled and waited for: nothing changes a chain
//     from here (Run did this before draining NBD already).
//  1. NBD: Run's Serve calls have returned, so no listener accepts and
//     every connection has answered its requests (or was closed after
//     the grace period) and flushed. The socket files go now, while the
//     names are still ours: later, another server may have taken them.
//  2. Each export's filesystems are unmounted and their loop devices
//     detached (their writeback goes through the FUSE files to the
//     disk), then its FUSE mount is unmounted and its server waited for
//     (it flushes the disk).
//  3. The disks are closed (each flushes first): after this nothing of
//     theirs is unwritten, and their locks are released.
//  4. Folders made for mount points are removed, then the state files:
//     a state file outlives everything it describes.
func (h *Host) teardown() error {
	h.stopControl()
	h.mu.Lock()
	h.phase = stopping
	exports := make([]*Export, 0, len(h.exports))
	for _, n := range sortedKeys(h.exports) {
		exports = append(exports, h.exports[n])
	}
	// The exports stay listed until their disks are closed: Abandon
	// (a second signal) flushes them if teardown hangs.
	listeners, sockets, states := h.listeners, h.sockets, h.states
	h.mu.Unlock()

	for _, l := range listeners {
		l.Close() // Run closed them already; a host that never ran did not
	}
	removeFiles(sockets)
	h.removals.Wait()
	var errs []error
	unmounted := map[*Export]bool{}
	for _, ex := range exports {
		mounted := ex.fuse != nil
		err := h.unmountFUSE(ex)
		unmounted[ex] = mounted && err == nil
		errs = append(errs, err)
	}
	for _, ex := range exports {
		err := closeDisk(ex)
		if err == nil {
			h.noteClosed(ex, unmounted[ex])
		}
		errs = append(errs, err)
	}
	h.mu.Lock()
	h.exports = map[string]*Export{}
	h.mu.Unlock()
	for _, ex := range exports {
		removeMadeDirs(ex.fuse)
	}
	for _, mnt := range states {
		RemoveMountState(mnt)
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
