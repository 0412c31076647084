package engine

// Power-loss tests: a workload runs on an image held by a crashfile.File,
// and at chosen points (every Sync, every WriteAt, random ones) the file
// is crashed: durable contents plus a random subset of the unsynced
// operations, reordered and torn. Each crashed file must repair (at most
// the fixable problems Check names), pass Check with bitmaps, and hold
// every write flushed before the crash (see crashModel).

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/engine/crashfile"
)

// crashScale multiplies the number of seeds the power-loss tests run,
// for long runs: go test ./engine -run TestCrash -crash.scale=50
var crashScale = flag.Int("crash.scale", 1, "multiply the seeds of the power-loss tests by this")

type crashConfig struct {
	name      string
	typ       DiskType
	size      int64
	blockSize int64
	noPunch   bool // the host cannot punch holes
	// tap makes a blktap image whose every block starts full, with its
	// batmap bits set (as blktap leaves them): a crash must never leave
	// a trusted bit over a block that is no longer full.
	tap bool
	// seeds is how many workloads TestCrashRandomPoints runs: more where
	// the file is small and a crash cheap.
	seeds int
}

// Small disks, so a crash (a copy of the file) is cheap; sizes leave the
// last block partial.
var crashConfigs = []crashConfig{
	{name: "fixed", typ: TypeFixed, size: 512<<10 + 5*SectorSize, seeds: 4},
	{name: "fixed-nopunch", typ: TypeFixed, size: 256<<10 + 3*SectorSize, noPunch: true, seeds: 2},
	{name: "dyn4k", typ: TypeDynamic, size: 40*4096 + 3*SectorSize, blockSize: 4096, seeds: 8},
	{name: "dyn64k", typ: TypeDynamic, size: 6*64<<10 + 11*SectorSize, blockSize: 64 << 10, seeds: 6},
	{name: "dyn512k", typ: TypeDynamic, size: 2*512<<10 + 256<<10 + 7*SectorSize, blockSize: 512 << 10, seeds: 2},
	{name: "dyn512k-nopunch", typ: TypeDynamic, size: 512<<10 + 9*SectorSize, blockSize: 512 << 10, noPunch: true, seeds: 1},
	{name: "dyn2m", typ: TypeDynamic, size: 2<<20 + 1<<20 + 9*SectorSize, blockSize: 2 << 20, seeds: 1},
	{name: "tap64k", typ: TypeDynamic, size: 6*64<<10 + 11*SectorSize, blockSize: 64 << 10, tap: true, seeds: 6},
}

func (c crashConfig) params(flushRate int) workloadParams {
	unit := c.blockSize
	if unit == 0 {
		unit = 64 << 10
	}
	return workloadParams{size: c.size, unit: unit, maxWrite: min(unit*3/2, 320<<10), flushRate: flushRate, reopen: true}
}

// crashRun is one workload on one image, with its model.
type crashRun struct {
	t    testing.TB
	cfg  crashConfig
	seed uint64
	rng  *rand.Rand // crash outcomes; the workload has its own
	f    *crashfile.File
	img  *Image
	m    *crashModel
	done []workOp // ops run so far, for failure messages
	cur  string   // the op running
	// crashes counts crashed files checked.
	crashes int
	// unrepaired is set once the image lives on after a crash without
	// Repair: sectors a crash left holding data under a clear bitmap bit
	// stay that way until a repair (dynamic images read them right).
	unrepaired bool
}

func newCrashRun(t testing.TB, cfg crashConfig, seed uint64) *crashRun {
	r := &crashRun{t: t, cfg: cfg, seed: seed, rng: rand.New(rand.NewPCG(seed, 1)), f: crashfile.New(), m: newCrashModel(cfg.size)}
	if cfg.noPunch {
		r.f.PunchErr = ErrUnsupported
	}
	opts := CreateOptions{Type: cfg.typ, Size: cfg.size, BlockSize: cfg.blockSize, UUID: UUID{1}, Time: time.Unix(1e9, 0)}
	if cfg.tap {
		opts.Creator = &tapCreator
	}
	img, err := CreateFile(r.f, cfg.name, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.img = img
	if cfg.tap {
		r.fillTap(seed)
	}
	return r
}

// fillTap writes every block of a blktap image full, flushes, and sets
// the batmap bits blktap would.
func (r *crashRun) fillTap(seed uint64) {
	o := workOp{kind: opWrite, off: 0, n: r.cfg.size, seed: seed}
	p := o.data()
	r.m.write(p, 0)
	if _, err := r.img.WriteAt(p, 0); err != nil {
		r.t.Fatal(err)
	}
	if err := r.img.Flush(); err != nil {
		r.t.Fatal(err)
	}
	r.m.flush()
	if _, err := r.img.sparse.rebuildBatmap(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *crashRun) fatalf(format string, args ...any) {
	r.t.Helper()
	var hist strings.Builder
	from := max(0, len(r.done)-15)
	for i, o := range r.done[from:] {
		fmt.Fprintf(&hist, "\n  %3d %s", from+i, o)
	}
	r.t.Fatalf("%s seed %d, during %s: %s\nlast ops:%s", r.cfg.name, r.seed, r.cur, fmt.Sprintf(format, args...), hist.String())
}

// run performs ops, updating the model before each (a crash may show an
// operation from the moment it starts) and after each flush.
func (r *crashRun) run(ops []workOp) {
	r.t.Helper()
	for _, o := range ops {
		r.cur = o.String()
		if err := r.do(o); err != nil {
			r.fatalf("%v", err)
		}
		r.done = append(r.done, o)
	}
	r.cur = "end of workload"
}

func (r *crashRun) do(o workOp) error {
	switch o.kind {
	case opWrite:
		p := o.data()
		r.m.write(p, o.off)
		_, err := r.img.WriteAt(p, o.off)
		return err
	case opZero:
		r.m.zero(o.off, o.n)
		return r.img.Zero(o.off, o.n, o.mode)
	case opTrim:
		r.m.zero(o.off, o.n)
		return r.img.Trim(o.off, o.n)
	case opFlush:
		if err := r.img.Flush(); err != nil {
			return err
		}
		r.m.flush()
	case opReopen:
		if err := r.img.Close(); err != nil {
			return err
		}
		r.m.flush()
		if err := checkClosed(r.f.Reopen(), r.unrepaired); err != nil {
			return err
		}
		r.f = r.f.Reopen()
		img, err := OpenFile(r.f, r.cfg.name, Options{})
		if err != nil {
			return fmt.Errorf("reopen: %w", err)
		}
		r.img = img
	case opRead:
		got := make([]byte, o.n)
		if _, err := r.img.ReadAt(got, o.off); err != nil {
			return err
		}
		return r.m.checkCurrent(got, o.off)
	}
	return nil
}

// finish closes the image and checks the file as it is and crashed.
func (r *crashRun) finish() {
	r.t.Helper()
	r.cur = "close"
	if err := r.img.Close(); err != nil {
		r.fatalf("close: %v", err)
	}
	r.m.flush()
	if err := checkClosed(r.f.Reopen(), false); err != nil {
		r.fatalf("%v", err)
	}
	r.cur = "after close"
	r.crash("after close")
	r.verify(r.f.CrashKeepAll(), "after close, nothing lost")
}

// checkClosed checks an image closed without a crash: no problem at all,
// not even one repair would fix; but if clearBits, sectors an earlier,
// unrepaired crash left holding data under a clear bitmap bit.
func checkClosed(f File, clearBits bool) error {
	rep, err := Check(f, CheckOptions{Bitmaps: true})
	if err != nil {
		return err
	}
	for _, p := range rep.Problems {
		if clearBits && p.Code == CodeDataUnderClearBit {
			continue
		}
		return fmt.Errorf("check after a clean close: %v", rep.Problems)
	}
	return nil
}

// crash checks one crash of the live file now.
func (r *crashRun) crash(where string) {
	r.t.Helper()
	r.verify(r.f.Crash(r.rng), where)
}

func (r *crashRun) verify(c *crashfile.File, where string) {
	r.t.Helper()
	r.crashes++
	if err := verifyCrashed(c, r.m, r.rng); err != nil {
		r.fatalf("crash %s: %v", where, err)
	}
}

// verifyCrashed repairs crashed file c if Check finds anything (all of it
// must be fixable), checks it clean, and compares its disk with m. Now
// and then it goes on using the image, to show it is writable again.
func verifyCrashed(c *crashfile.File, m *crashModel, rng *rand.Rand) error {
	return verifyCrashedDepth(c, m, rng, 0)
}

// verifyCrashedDepth is verifyCrashed; depth counts crashes in the middle
// of recovery (opening read-write, Repair) that led here.
func verifyCrashedDepth(c *crashfile.File, m *crashModel, rng *rand.Rand, depth int) error {
	rep, err := Check(c, CheckOptions{Bitmaps: true})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			if !p.Fixable {
				return fmt.Errorf("crash left a problem repair cannot fix: %s", p)
			}
			if p.Code == CodeBatmapStale {
				return fmt.Errorf("crash left blktap's batmap trusting a block that is not full (blktap would lose writes): %s", p)
			}
		}
		// Before any repair it opens, read-only, and reads what it must.
		if err := readCrashed(c, m); err != nil {
			return fmt.Errorf("before repair (problems: %v): %w", rep.Problems, err)
		}
		if depth < 2 && rng.IntN(4) == 0 {
			// Power fails again while recovering: that must recover too.
			if err := crashWhileRecovering(c, m, rng, depth); err != nil {
				return fmt.Errorf("crash while recovering from (%v): %w", rep.Problems, err)
			}
		}
		if rng.IntN(2) == 0 {
			// Opening read-write rewrites a torn footer by itself.
			img, err := OpenFile(c.Reopen(), "crashed", Options{})
			if err != nil {
				return fmt.Errorf("open read-write before repair (problems: %v): %w", rep.Problems, err)
			}
			if err := img.Close(); err != nil {
				return fmt.Errorf("close: %w", err)
			}
		}
		did, err := RepairFile(c, "crashed", RepairOptions{Bitmaps: true})
		if err != nil {
			return fmt.Errorf("repair (problems: %v): %w", rep.Problems, err)
		}
		after, err := Check(c, CheckOptions{Bitmaps: true})
		if err != nil {
			return fmt.Errorf("check after repair: %w", err)
		}
		if !after.OK() {
			return fmt.Errorf("problems after repair: %v (before: %v; repair did %q)", after.Problems, rep.Problems, did)
		}
	}
	if err := readCrashed(c, m); err != nil {
		return err
	}
	if rng.IntN(4) == 0 {
		got, _ := readAll(c)
		return useAfterCrash(c, got, rng)
	}
	return nil
}

// crashWhileRecovering runs what recovery runs (opening read-write and
// closing, or Repair) on a copy of crashed file c, cut by a power failure
// at a random WriteAt or Sync, and verifies what that leaves.
func crashWhileRecovering(c *crashfile.File, m *crashModel, rng *rand.Rand, depth int) error {
	h := c.Snapshot()
	var mid *crashfile.File
	atWrite, atSync := 1+rng.IntN(4), 1+rng.IntN(3)
	h.BeforeWrite = func(n int, off int64, size int) error {
		if mid == nil && n == atWrite {
			mid = h.Crash(rng)
		}
		if mid != nil {
			return errPowerCut
		}
		return nil
	}
	h.BeforeSync = func(n int) error {
		if mid == nil && n == atSync {
			mid = h.Crash(rng)
		}
		if mid != nil {
			return errPowerCut
		}
		return nil
	}
	if rng.IntN(2) == 0 {
		if img, err := OpenFile(h, "crashed", Options{}); err == nil {
			img.Close()
		} else if !errors.Is(err, errPowerCut) {
			return fmt.Errorf("open read-write: %w", err)
		}
	} else if _, err := RepairFile(h, "crashed", RepairOptions{Bitmaps: true}); err != nil && !errors.Is(err, errPowerCut) {
		return fmt.Errorf("repair: %w", err)
	}
	if mid == nil {
		mid = h.Crash(rng)
	}
	return verifyCrashedDepth(mid, m, rng, depth+1)
}

// readCrashed opens crashed file c read-only and checks its disk with m.
func readCrashed(c *crashfile.File, m *crashModel) error {
	got, err := readAll(c)
	if err != nil {
		return err
	}
	return m.checkCrashed(got)
}

func readAll(c *crashfile.File) ([]byte, error) {
	img, err := OpenFile(c.Reopen(), "crashed", Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open read-only: %w", err)
	}
	defer img.Close()
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read: %w", err)
	}
	return got, nil
}

// useAfterCrash writes to a crashed and repaired image (allocating
// blocks), closes it and checks it: what a crash left must not trip up
// the image's next life.
func useAfterCrash(c *crashfile.File, contents []byte, rng *rand.Rand) error {
	img, err := OpenFile(c.Reopen(), "crashed", Options{})
	if err != nil {
		return fmt.Errorf("reopen after crash: %w", err)
	}
	size := int64(len(contents))
	for range 4 {
		off := rng.Int64N(size)
		p := make([]byte, min(size-off, 1+rng.Int64N(64<<10)))
		for i := range p {
			p[i] = byte(rng.Uint32() | 1)
		}
		if _, err := img.WriteAt(p, off); err != nil {
			return fmt.Errorf("write after crash: %w", err)
		}
		copy(contents[off:], p)
	}
	if err := img.Close(); err != nil {
		return fmt.Errorf("close after crash: %w", err)
	}
	rep, err := Check(c, CheckOptions{Bitmaps: true})
	if err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("check after writing to the crashed image: %v", rep.Problems)
	}
	img, err = OpenFile(c.Reopen(), "crashed", Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer img.Close()
	got := make([]byte, size)
	if _, err := img.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	for i := range got {
		if got[i] != contents[i] {
			return fmt.Errorf("after writing to the crashed image, offset %#x reads %#x, want %#x", i, got[i], contents[i])
		}
	}
	return nil
}

// TestCrashEverySyncAndWrite runs short workloads and crashes at every
// Sync: twice before it (the unsynced log is largest there) and once
// after; and before one WriteAt in four, which cuts flushes between
// their metadata writes.
func TestCrashEverySyncAndWrite(t *testing.T) {
	nops := 30
	if testing.Short() {
		nops = 20
	}
	total := 0
	for _, cfg := range crashConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			for seed := range uint64(*crashScale) {
				r := newCrashRun(t, cfg, 1000+seed)
				r.f.BeforeSync = func(n int) error {
					for range 2 {
						r.crash(fmt.Sprintf("before sync %d", n))
					}
					return nil
				}
				r.f.AfterSync = func(n int) { r.crash(fmt.Sprintf("after sync %d", n)) }
				r.f.BeforeWrite = func(n int, off int64, size int) error {
					if r.rng.IntN(4) == 0 {
						r.crash(fmt.Sprintf("before write %d (%#x+%#x)", n, off, size))
					}
					return nil
				}
				r.run(genWorkload(rand.New(rand.NewPCG(seed, 2)), cfg.params(5), nops))
				r.finish()
				total += r.crashes
			}
		})
	}
	t.Logf("%d crashed files checked", total)
}

// TestCrashRandomPoints runs longer random workloads on many seeds and
// crashes at random Syncs, WriteAts and between operations.
func TestCrashRandomPoints(t *testing.T) {
	nops := 100
	if testing.Short() {
		nops = 50
	}
	total := 0
	for _, cfg := range crashConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			for seed := range uint64(cfg.seeds * *crashScale) {
				r := newCrashRun(t, cfg, 2000+seed)
				r.f.BeforeSync = func(n int) error {
					if r.rng.IntN(6) == 0 {
						r.crash(fmt.Sprintf("before sync %d", n))
					}
					return nil
				}
				r.f.BeforeWrite = func(n int, off int64, size int) error {
					if r.rng.IntN(20) == 0 {
						r.crash(fmt.Sprintf("before write %d (%#x+%#x)", n, off, size))
					}
					return nil
				}
				for _, o := range genWorkload(rand.New(rand.NewPCG(seed, 3)), cfg.params(8), nops) {
					r.run([]workOp{o})
					if r.rng.IntN(10) == 0 {
						r.crash("between operations")
					}
				}
				r.finish()
				total += r.crashes
			}
		})
	}
	t.Logf("%d crashed files checked", total)
}

// TestCrashAfterIOError fails one WriteAt or Sync with EIO or ENOSPC at
// a random point of a workload, stops at the first operation that
// reports an error, closes the image (which may fail too) and crashes:
// the file must repair and hold everything flushed before the error,
// whatever state the failure left behind.
func TestCrashAfterIOError(t *testing.T) {
	total, failed := 0, 0
	for _, cfg := range crashConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			for seed := range uint64(cfg.seeds * *crashScale) {
				r := newCrashRun(t, cfg, 3000+seed)
				errno := []error{syscall.EIO, syscall.ENOSPC}[seed%2]
				writes, syncs := r.f.Writes(), r.f.Syncs()
				if seed%3 == 0 {
					at := syncs + 1 + r.rng.IntN(20)
					r.f.BeforeSync = func(n int) error {
						if n == at {
							return errno
						}
						return nil
					}
				} else {
					at := writes + 1 + r.rng.IntN(150)
					r.f.BeforeWrite = func(n int, off int64, size int) error {
						if n == at {
							return errno
						}
						return nil
					}
				}
				for _, o := range genWorkload(rand.New(rand.NewPCG(seed, 4)), cfg.params(6), 80) {
					r.cur = o.String()
					if err := r.do(o); err != nil {
						if !errors.Is(err, errno) {
							r.fatalf("error %v does not wrap the injected %v", err, errno)
						}
						failed++
						break
					}
					r.done = append(r.done, o)
				}
				r.cur = "close after the error"
				r.img.Close() // may fail; what it leaves is checked below
				for range 4 {
					r.crash("after an I/O error")
				}
				total += r.crashes
			}
		})
	}
	t.Logf("%d crashed files checked, %d workloads hit the injected error", total, failed)
}

// errPowerCut fails every I/O after the simulated power cut, so the
// workload on the abandoned image stops.
var errPowerCut = errors.New("test: power cut")

// TestCrashLives runs several lives of one image: each life's workload
// is cut by a power failure at a random WriteAt or Sync, and the next
// life goes on with the crashed file, half the time after Check and
// Repair, half the time just opening it read-write as a user who never
// ran vhd repair would. Whatever a crash leaves must not trip up later
// lives; at the end one Repair makes the image check clean.
func TestCrashLives(t *testing.T) {
	total := 0
	for _, cfg := range crashConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			for seed := range uint64(cfg.seeds * *crashScale) {
				r := newCrashRun(t, cfg, 4000+seed)
				wrng := rand.New(rand.NewPCG(seed, 16))
				for life := range 4 {
					var crashed *crashfile.File
					writes, syncs := r.f.Writes(), r.f.Syncs()
					atWrite, atSync := writes+1+r.rng.IntN(120), syncs+1+r.rng.IntN(30)
					r.f.BeforeWrite = func(n int, off int64, size int) error {
						if crashed == nil && n == atWrite {
							crashed = r.f.Crash(r.rng)
						}
						if crashed != nil {
							return errPowerCut
						}
						return nil
					}
					r.f.BeforeSync = func(n int) error {
						if crashed == nil && n == atSync {
							crashed = r.f.Crash(r.rng)
						}
						if crashed != nil {
							return errPowerCut
						}
						return nil
					}
					for _, o := range genWorkload(wrng, cfg.params(6), 60) {
						r.cur = fmt.Sprintf("life %d: %s", life, o)
						if err := r.do(o); err != nil {
							if errors.Is(err, errPowerCut) {
								break
							}
							r.fatalf("%v", err)
						}
						r.done = append(r.done, o)
					}
					if crashed == nil {
						crashed = r.f.Crash(r.rng)
					}
					r.cur = fmt.Sprintf("life %d: after the power cut", life)
					r.crashes++
					var err error
					if r.rng.IntN(2) == 0 {
						err = verifyCrashed(crashed, r.m, r.rng)
					} else {
						err = readCrashed(crashed, r.m)
						r.unrepaired = true
					}
					if err != nil {
						r.fatalf("%v", err)
					}
					got, err := readAll(crashed)
					if err != nil {
						r.fatalf("%v", err)
					}
					// The next life starts from what the crash left.
					r.m = newCrashModel(cfg.size)
					copy(r.m.cur, got)
					r.m.flush()
					r.done = append(r.done, workOp{kind: opReopen})
					r.f = crashed.Reopen()
					if cfg.noPunch {
						r.f.PunchErr = ErrUnsupported
					}
					if r.img, err = OpenFile(r.f, cfg.name, Options{}); err != nil {
						r.fatalf("open the crashed image read-write: %v", err)
					}
				}
				r.cur = "final close"
				if err := r.img.Close(); err != nil {
					r.fatalf("%v", err)
				}
				r.m.flush()
				if _, err := RepairFile(r.f.Reopen(), "final", RepairOptions{Bitmaps: true}); err != nil {
					r.fatalf("final repair: %v", err)
				}
				if err := checkClosed(r.f.Reopen(), false); err != nil {
					r.fatalf("%v", err)
				}
				r.verify(r.f.CrashKeepAll(), "at the end")
				total += r.crashes
			}
		})
	}
	t.Logf("%d crashed files checked", total)
}
