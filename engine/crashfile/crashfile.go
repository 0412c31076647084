// Package crashfile is an in-memory file that simulates power loss, for
// testing that code built on it survives a crash at any point.
//
// A File keeps two things: the durable contents (what the medium holds
// as of the last successful Sync) and a log of the operations since
// (WriteAt, Truncate, PunchHole). Reads see every operation at once, as
// they would through a page cache. Crash returns a new File holding what
// the medium could hold had power failed at that moment: the durable
// contents plus a random subset of the logged operations, applied in a
// random order, each write possibly torn at 512-byte sector granularity
// (some of its sectors persisted, others not), and a write that grew the
// file possibly leaving only the new size behind (zeros, as XFS and ext4
// can show after a crash).
//
// What the model assumes of the medium: a single aligned 512-byte sector
// is written whole or not at all; Truncate and PunchHole are atomic
// (filesystems journal them); Sync makes every earlier operation durable.
// A Sync that fails (see BeforeSync) is modelled on Linux after a
// writeback error: the logged operations are dropped without reaching the
// medium, yet reads still see them, and a later Sync does not bring them
// back. Code that retries a failed Sync and trusts it is caught by that.
//
// Hooks let a test stop at exact points: BeforeSync and AfterSync around
// the nth Sync, BeforeWrite before the nth WriteAt. They run without the
// File's lock held, so they may call Crash, Snapshot or any other method.
// Hooks also inject errors: one that returns an error fails the operation
// with nothing done (EIO, ENOSPC, ...).
//
// File satisfies vhdkit/engine.File. It does not import engine, so the
// engine's own tests can use it; set PunchErr to engine.ErrUnsupported to
// model a host that cannot punch holes.
package crashfile

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
)

// SectorSize is the unit a write may be torn at.
const SectorSize = 512

// ErrClosed is returned by operations on a closed File.
var ErrClosed = errors.New("crashfile: file is closed")

// Op is a kind of logged operation.
type Op uint8

// The operations the log holds.
const (
	OpWrite Op = iota
	OpTruncate
	OpPunch
)

func (o Op) String() string {
	switch o {
	case OpWrite:
		return "write"
	case OpTruncate:
		return "truncate"
	case OpPunch:
		return "punch"
	}
	return "unknown"
}

// op is one unsynced operation. off is the size for OpTruncate.
type op struct {
	kind Op
	off  int64
	n    int64
	data []byte // OpWrite only
}

// state is what every handle on one simulated file shares.
type state struct {
	mu      sync.Mutex
	durable []byte // contents as of the last successful Sync
	cur     []byte // contents reads see
	log     []op   // operations since the last Sync, in issue order
	syncs   int    // Syncs started, for the hooks' n
	writes  int    // WriteAts started, for the hooks' n
}

// File is one handle on a simulated file. Hooks and PunchErr are set
// before the File is used and not changed while it is; Reopen copies them.
type File struct {
	s      *state
	closed bool // guarded by s.mu

	// BeforeSync is called at the start of the nth Sync (n counts from 1
	// over the life of the file, all handles). If it returns an error,
	// the Sync fails with it, as a failed fsync does (see package doc).
	BeforeSync func(n int) error
	// AfterSync is called once the nth Sync has succeeded.
	AfterSync func(n int)
	// BeforeWrite is called before the nth WriteAt (counting from 1). If
	// it returns an error the write fails with it and writes nothing.
	BeforeWrite func(n int, off int64, size int) error
	// PunchErr, if set, is what PunchHole returns (doing nothing).
	PunchErr error
}

// New returns an empty file.
func New() *File { return &File{s: &state{}} }

// FromBytes returns a file whose durable contents are a copy of b.
func FromBytes(b []byte) *File {
	return &File{s: &state{durable: slices.Clone(b), cur: slices.Clone(b)}}
}

// Reopen returns a new open handle on the same file, with f's hooks: what
// a process sees when it opens the file again without a crash.
func (f *File) Reopen() *File {
	return &File{s: f.s, BeforeSync: f.BeforeSync, AfterSync: f.AfterSync, BeforeWrite: f.BeforeWrite, PunchErr: f.PunchErr}
}

func (f *File) lock() error {
	f.s.mu.Lock()
	if f.closed {
		f.s.mu.Unlock()
		return ErrClosed
	}
	return nil
}

// ReadAt reads what the last operations left, synced or not.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if err := f.lock(); err != nil {
		return 0, err
	}
	defer f.s.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("crashfile: read at negative offset %d", off)
	}
	if off >= int64(len(f.s.cur)) {
		return 0, io.EOF
	}
	n := copy(p, f.s.cur[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at off, growing the file with zeros if needed.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("crashfile: write at negative offset %d", off)
	}
	f.s.mu.Lock()
	f.s.writes++
	n := f.s.writes
	f.s.mu.Unlock()
	if f.BeforeWrite != nil {
		if err := f.BeforeWrite(n, off, len(p)); err != nil {
			return 0, err
		}
	}
	if err := f.lock(); err != nil {
		return 0, err
	}
	defer f.s.mu.Unlock()
	o := op{kind: OpWrite, off: off, n: int64(len(p)), data: slices.Clone(p)}
	f.s.cur = o.apply(f.s.cur)
	f.s.log = append(f.s.log, o)
	return len(p), nil
}

// Truncate sets the size of the file.
func (f *File) Truncate(size int64) error {
	if size < 0 {
		return fmt.Errorf("crashfile: truncate to negative size %d", size)
	}
	if err := f.lock(); err != nil {
		return err
	}
	defer f.s.mu.Unlock()
	o := op{kind: OpTruncate, off: size}
	f.s.cur = o.apply(f.s.cur)
	f.s.log = append(f.s.log, o)
	return nil
}

// PunchHole zeros [off, off+n) without changing the size (a range past
// the end is ignored), unless PunchErr is set.
func (f *File) PunchHole(off, n int64) error {
	if off < 0 || n < 0 {
		return fmt.Errorf("crashfile: punch hole at %d+%d", off, n)
	}
	if f.PunchErr != nil {
		return f.PunchErr
	}
	if err := f.lock(); err != nil {
		return err
	}
	defer f.s.mu.Unlock()
	o := op{kind: OpPunch, off: off, n: n}
	f.s.cur = o.apply(f.s.cur)
	f.s.log = append(f.s.log, o)
	return nil
}

// Sync makes every logged operation durable.
func (f *File) Sync() error {
	f.s.mu.Lock()
	if f.closed {
		f.s.mu.Unlock()
		return ErrClosed
	}
	f.s.syncs++
	n := f.s.syncs
	f.s.mu.Unlock()
	if f.BeforeSync != nil {
		if err := f.BeforeSync(n); err != nil {
			f.s.mu.Lock()
			f.s.log = nil // lost: see the package doc
			f.s.mu.Unlock()
			return err
		}
	}
	if err := f.lock(); err != nil {
		return err
	}
	// The log is applied rather than cur copied: a failed Sync may have
	// dropped operations reads still see.
	for _, o := range f.s.log {
		f.s.durable = o.apply(f.s.durable)
	}
	f.s.log = nil
	f.s.mu.Unlock()
	if f.AfterSync != nil {
		f.AfterSync(n)
	}
	return nil
}

// replayLocked is the durable contents with the whole log applied in
// order. Called with mu held.
func (s *state) replayLocked() []byte {
	b := slices.Clone(s.durable)
	for _, o := range s.log {
		b = o.apply(b)
	}
	return b
}

// Size is the size reads see.
func (f *File) Size() (int64, error) {
	if err := f.lock(); err != nil {
		return 0, err
	}
	defer f.s.mu.Unlock()
	return int64(len(f.s.cur)), nil
}

// Close closes this handle; the file itself lives on (see Reopen).
func (f *File) Close() error {
	if err := f.lock(); err != nil {
		return err
	}
	f.closed = true
	f.s.mu.Unlock()
	return nil
}

// Syncs is how many Syncs have started.
func (f *File) Syncs() int {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return f.s.syncs
}

// Writes is how many WriteAts have started.
func (f *File) Writes() int {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return f.s.writes
}

// Pending is how many operations wait for a Sync.
func (f *File) Pending() int {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return len(f.s.log)
}

// Durable returns a copy of the durable contents.
func (f *File) Durable() []byte {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return slices.Clone(f.s.durable)
}

// Bytes returns a copy of the contents reads see.
func (f *File) Bytes() []byte {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return slices.Clone(f.s.cur)
}

// Snapshot returns an independent copy of the file, log included and
// without hooks, to crash later (or several times).
func (f *File) Snapshot() *File {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	s := &state{durable: slices.Clone(f.s.durable), cur: slices.Clone(f.s.cur), log: slices.Clone(f.s.log)}
	return &File{s: s}
}

// Crash returns a new file, durable and without hooks, holding what the
// medium could hold had power failed now: the durable contents plus a
// random subset of the log, in a random order, writes possibly torn.
// Each call draws a different outcome from rng; f is unchanged.
func (f *File) Crash(rng *rand.Rand) *File {
	f.s.mu.Lock()
	b := slices.Clone(f.s.durable)
	log := slices.Clone(f.s.log)
	f.s.mu.Unlock()
	// How much of the log survives varies from crash to crash, so both
	// "almost nothing" and "almost everything" come up often.
	var keep float64
	switch rng.IntN(5) {
	case 0:
		keep = 0
	case 1:
		keep = 1
	default:
		keep = rng.Float64()
	}
	for _, i := range rng.Perm(len(log)) {
		if rng.Float64() >= keep {
			continue
		}
		o := log[i]
		if o.kind == OpWrite && rng.IntN(3) == 0 {
			b = o.applyTorn(b, rng)
			continue
		}
		b = o.apply(b)
	}
	return &File{s: &state{durable: b, cur: slices.Clone(b)}}
}

// CrashKeepAll is a crash that loses nothing: what a killed process
// leaves behind (the host's cache survives it).
func (f *File) CrashKeepAll() *File {
	f.s.mu.Lock()
	b := f.s.replayLocked()
	f.s.mu.Unlock()
	return &File{s: &state{durable: b, cur: slices.Clone(b)}}
}

// apply performs o on contents b and returns the result.
func (o op) apply(b []byte) []byte {
	switch o.kind {
	case OpWrite:
		return writeInto(b, o.data, o.off)
	case OpTruncate:
		if o.off <= int64(len(b)) {
			return b[:o.off]
		}
		return grow(b, o.off)
	case OpPunch:
		if o.off < int64(len(b)) {
			clear(b[o.off:min(int64(len(b)), o.off+o.n)])
		}
	}
	return b
}

// applyTorn performs some of write o's sectors (aligned in the file) and
// not others. If none lands, the growth of the file may still have.
func (o op) applyTorn(b []byte, rng *rand.Rand) []byte {
	landed := false
	for s := o.off / SectorSize * SectorSize; s < o.off+o.n; s += SectorSize {
		if rng.IntN(2) == 0 {
			continue
		}
		from, to := max(s, o.off), min(s+SectorSize, o.off+o.n)
		b = writeInto(b, o.data[from-o.off:to-o.off], from)
		landed = true
	}
	if !landed && rng.IntN(4) == 0 {
		b = grow(b, o.off+o.n)
	}
	return b
}

func writeInto(b, p []byte, off int64) []byte {
	b = grow(b, off+int64(len(p)))
	copy(b[off:], p)
	return b
}

// grow extends b with zeros to size bytes (never shrinks it).
func grow(b []byte, size int64) []byte {
	if size <= int64(len(b)) {
		return b
	}
	if size <= int64(cap(b)) {
		old := len(b)
		b = b[:size]
		clear(b[old:])
		return b
	}
	nb := make([]byte, size, max(size, 2*int64(cap(b))))
	copy(nb, b)
	return nb
}
