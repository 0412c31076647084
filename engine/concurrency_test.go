package engine

// Concurrency tests, meant for -race: many goroutines write, zero,
// deallocate, read, list extents and flush one dynamic image at once.
// Each ends with Check (bitmaps included), a comparison with a model,
// and a look at what a power failure right after the last Flush leaves.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"vhdkit/engine/crashfile"
)

// concurrencyIters scales the work per goroutine.
func concurrencyIters() int {
	if testing.Short() {
		return 150
	}
	return 600
}

// background runs fn in a loop on its own goroutine until stop is
// called, and reports its first error then.
type background struct {
	wg   sync.WaitGroup
	quit atomic.Bool
	mu   sync.Mutex
	err  error
}

func (bg *background) run(fn func(rng *rand.Rand) error, seed uint64) {
	bg.wg.Add(1)
	go func() {
		defer bg.wg.Done()
		rng := rand.New(rand.NewPCG(seed, 5))
		for !bg.quit.Load() {
			if err := fn(rng); err != nil {
				bg.fail(err)
				return
			}
		}
	}()
}

func (bg *background) fail(err error) {
	bg.mu.Lock()
	if bg.err == nil {
		bg.err = err
	}
	bg.mu.Unlock()
}

func (bg *background) stop() error {
	bg.quit.Store(true)
	bg.wg.Wait()
	return bg.err
}

// finalChecks closes img and checks f: Check clean, contents equal want,
// and the same after losing everything unsynced (Close flushed).
func finalChecks(t *testing.T, f *crashfile.File, img *Image, want func(got []byte) error) {
	t.Helper()
	if err := img.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, c := range []struct {
		name string
		f    *crashfile.File
	}{{"after close", f.Reopen()}, {"after power loss", crashfile.FromBytes(f.Durable())}} {
		rep, err := Check(c.f, CheckOptions{Bitmaps: true})
		if err != nil {
			t.Fatalf("%s: check: %v", c.name, err)
		}
		for _, p := range rep.Problems {
			t.Errorf("%s: check: %s", c.name, p)
		}
		img, err := OpenFile(c.f, "final", Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("%s: open: %v", c.name, err)
		}
		got := make([]byte, img.Size())
		if _, err := img.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("%s: read: %v", c.name, err)
		}
		img.Close()
		if err := want(got); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// withTinyBitmapCache runs test for 4 KiB and 64 KiB blocks with a
// bitmap cache of four sectors, so bitmaps are evicted and reloaded all
// the time.
func withTinyBitmapCache(t *testing.T, test func(t *testing.T, blockSize int64)) {
	for _, bs := range []int64{4096, 64 << 10} {
		t.Run(fmt.Sprintf("block%dk", bs>>10), func(t *testing.T) {
			defer func(old int64) { maxCachedBitmapBytes = old }(maxCachedBitmapBytes)
			maxCachedBitmapBytes = 4 * SectorSize
			test(t, bs)
		})
	}
}

// TestConcurrentDisjointWriters: writers own interleaved runs of sectors,
// so every block is shared and allocated, filled and written partly by
// several at once; a deallocator zeros and rewrites whole blocks of its
// own; readers, an extent lister and a flusher run throughout. The bitmap
// cache is kept tiny so bitmaps are evicted and reloaded all the time.
func TestConcurrentDisjointWriters(t *testing.T) {
	withTinyBitmapCache(t, testDisjointWriters)
}

func testDisjointWriters(t *testing.T, bs int64) {
	const (
		writers   = 6
		run       = 4 // sectors a writer owns in a row
		deadBlock = 3 // the last blocks belong to the deallocator
	)
	blocks := int64(16)
	if bs < 64<<10 {
		blocks = 64
	}
	size := blocks*bs - 3*SectorSize // a partial last block
	f, img := newTestImage(t, TypeDynamic, size, bs)
	model := make([]byte, size)
	shared := (blocks - deadBlock) * bs // writers' part of the disk

	// A block written before the goroutines start and never again:
	// readers check it throughout.
	static := pattern(7, int(bs))
	if _, err := img.WriteAt(static, 0); err != nil {
		t.Fatal(err)
	}
	copy(model, static)

	var bg background
	for r := range 2 {
		bg.run(func(rng *rand.Rand) error {
			off := rng.Int64N(size)
			p := make([]byte, min(size-off, 1+rng.Int64N(bs+bs/2)))
			if _, err := img.ReadAt(p, off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			got := make([]byte, bs)
			if _, err := img.ReadAt(got, 0); err != nil {
				return err
			}
			if !bytes.Equal(got, static) {
				return errors.New("a block nobody writes changed under concurrent writes")
			}
			return nil
		}, uint64(r))
	}
	bg.run(func(rng *rand.Rand) error {
		_, err := img.Extents(0, size)
		return err
	}, 10)
	bg.run(func(rng *rand.Rand) error { return img.Flush() }, 11)

	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	owned := func(w int, s int64) bool {
		return s*SectorSize >= bs && int((s/run)%writers) == w && s*SectorSize < shared
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 6))
			for i := 0; i < concurrencyIters(); i++ {
				// One run of this writer's sectors, whole or in part.
				first := (rng.Int64N(shared/SectorSize/run/writers)*writers + int64(w)) * run
				if !owned(w, first) {
					continue
				}
				off, n := first*SectorSize, int64(run*SectorSize)
				if rng.IntN(3) == 0 { // unaligned, inside the run
					d := rng.Int64N(n - 1)
					off, n = off+d, 1+rng.Int64N(n-d-1)
				}
				var err error
				switch rng.IntN(6) {
				case 0:
					clear(model[off : off+n])
					err = img.Zero(off, n, ZeroMode(rng.IntN(2)))
				case 1:
					p := make([]byte, n)
					copy(model[off:], p)
					_, err = img.WriteAt(p, off)
				default:
					p := pattern(byte(rng.Uint32()), int(n))
					copy(model[off:], p)
					_, err = img.WriteAt(p, off)
				}
				if err == nil && rng.IntN(20) == 0 {
					err = img.Flush()
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
			}
			errs <- img.Flush()
		}()
	}
	wg.Add(1)
	go func() { // the deallocator
		defer wg.Done()
		rng := rand.New(rand.NewPCG(99, 6))
		for i := 0; i < concurrencyIters(); i++ {
			b := blocks - deadBlock + rng.Int64N(deadBlock)
			off := b * bs
			n := min(bs, size-off)
			var err error
			if rng.IntN(2) == 0 {
				clear(model[off : off+n])
				err = img.Zero(off, n, ZeroMayDeallocate)
			} else {
				in := rng.Int64N(n/SectorSize) * SectorSize
				p := pattern(byte(rng.Uint32()), int(min(n-in, SectorSize*(1+rng.Int64N(16)))))
				copy(model[off+in:], p)
				_, err = img.WriteAt(p, off+in)
			}
			if err != nil {
				errs <- fmt.Errorf("deallocator: %w", err)
				return
			}
		}
		errs <- nil
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := bg.stop(); err != nil {
		t.Error(err)
	}
	finalChecks(t, f, img, func(got []byte) error {
		return (&crashModel{cur: model}).checkCurrent(got, 0)
	})
}

// TestConcurrentOverlappingWriters: writers write, zero and deallocate
// ranges that overlap each other's. Every sector written carries its
// sector number, writer and sequence, so a read can tell data that
// landed in the wrong place from data merely overwritten. At the end each
// sector holds the last thing one of the writers put there.
func TestConcurrentOverlappingWriters(t *testing.T) {
	const (
		bs      = 16 << 10
		blocks  = 24
		size    = blocks * bs
		writers = 6
		sectors = size / SectorSize
	)
	defer func(old int64) { maxCachedBitmapBytes = old }(maxCachedBitmapBytes)
	maxCachedBitmapBytes = 8 * SectorSize
	f, img := newTestImage(t, TypeDynamic, size, bs)

	// tag is the contents of sector s written by writer w as its seq'th
	// write; seq starts at 1, so a tag is never zeros.
	tag := func(s int64, w, seq int) []byte {
		p := make([]byte, SectorSize)
		for i := 0; i < SectorSize; i += 16 {
			binary.LittleEndian.PutUint64(p[i:], uint64(s))
			binary.LittleEndian.PutUint64(p[i+8:], uint64(w)<<32|uint64(seq))
		}
		return p
	}
	// valid checks a sector read at s: zeros or some writer's tag for s.
	valid := func(p []byte, s int64) error {
		if isZero(p) {
			return nil
		}
		if binary.LittleEndian.Uint64(p) != uint64(s) || !bytes.Equal(p, tag(s, int(binary.LittleEndian.Uint64(p[8:])>>32), int(uint32(binary.LittleEndian.Uint64(p[8:]))))) {
			return fmt.Errorf("sector %d holds data written for sector %d, or garbage", s, binary.LittleEndian.Uint64(p))
		}
		return nil
	}
	// last[w][s] is the last thing writer w put in sector s: 0 nothing,
	// -1 zeros, else the seq of its tag.
	var last [writers][sectors]int

	var bg background
	for r := range 2 {
		bg.run(func(rng *rand.Rand) error {
			s := rng.Int64N(sectors)
			n := min(sectors-s, 1+rng.Int64N(2*bs/SectorSize))
			p := make([]byte, n*SectorSize)
			if _, err := img.ReadAt(p, s*SectorSize); err != nil {
				return err
			}
			for i := range n {
				if err := valid(p[i*SectorSize:(i+1)*SectorSize], s+i); err != nil {
					return fmt.Errorf("concurrent read: %w", err)
				}
			}
			return nil
		}, uint64(20+r))
	}
	bg.run(func(rng *rand.Rand) error { return img.Flush() }, 30)

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for seq := 1; seq <= concurrencyIters(); seq++ {
				s := rng.Int64N(sectors)
				n := min(sectors-s, 1+rng.Int64N(bs/SectorSize+8))
				var err error
				zeroed := true
				switch rng.IntN(8) {
				case 0: // a whole block, deallocated
					s, n = s/(bs/SectorSize)*(bs/SectorSize), bs/SectorSize
					err = img.Zero(s*SectorSize, n*SectorSize, ZeroMayDeallocate)
				case 1:
					err = img.Zero(s*SectorSize, n*SectorSize, ZeroMode(rng.IntN(2)))
				case 2:
					err = img.Trim(s*SectorSize, n*SectorSize)
				default:
					zeroed = false
					p := make([]byte, 0, n*SectorSize)
					for i := range n {
						p = append(p, tag(s+i, w, seq)...)
					}
					_, err = img.WriteAt(p, s*SectorSize)
					for i := range n {
						last[w][s+i] = seq
					}
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				if zeroed {
					for i := range n {
						last[w][s+i] = -1
					}
				}
			}
			errs <- nil
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := bg.stop(); err != nil {
		t.Error(err)
	}
	finalChecks(t, f, img, func(got []byte) error {
		for s := int64(0); s < sectors; s++ {
			p := got[s*SectorSize : (s+1)*SectorSize]
			if err := valid(p, s); err != nil {
				return err
			}
			ok, anyWrite := false, false
			for w := range writers {
				switch l := last[w][s]; {
				case l == 0:
				case l == -1:
					anyWrite = true
					ok = ok || isZero(p)
				default:
					anyWrite = true
					ok = ok || bytes.Equal(p, tag(s, w, l))
				}
			}
			if !anyWrite {
				ok = isZero(p)
			}
			if !ok {
				return fmt.Errorf("sector %d holds a value no writer left there last", s)
			}
		}
		return nil
	})
}

// TestAutoFlushDirtyBitmaps: past maxDirtyBitmaps dirty bitmaps a write
// flushes by itself. Writers on separate blocks trip it at once; the
// bound holds, the flushes happen, and the image checks clean, also
// after a power failure that keeps only what was synced.
func TestAutoFlushDirtyBitmaps(t *testing.T) {
	defer func(old int) { maxDirtyBitmaps = old }(maxDirtyBitmaps)
	maxDirtyBitmaps = 3
	const (
		bs      = 4096
		blocks  = 96
		size    = blocks * bs
		writers = 4
	)
	f, img := newTestImage(t, TypeDynamic, size, bs)
	syncs := f.Syncs()
	model := make([]byte, size)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := int64(w); b < blocks; b += writers {
				// One sector per block: every write dirties a new bitmap.
				off := b*bs + int64(w)*SectorSize
				p := pattern(byte(b), SectorSize)
				copy(model[off:], p)
				if _, err := img.WriteAt(p, off); err != nil {
					errs <- err
					return
				}
				img.sparse.metaMu.Lock()
				n := len(img.sparse.dirtyBitmaps)
				img.sparse.metaMu.Unlock()
				// Each writer may have added one past the bound before
				// one of them flushed.
				if n > maxDirtyBitmaps+writers {
					errs <- fmt.Errorf("%d dirty bitmaps, bound %d", n, maxDirtyBitmaps)
					return
				}
			}
			errs <- nil
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := f.Syncs() - syncs; got < 2*blocks/(maxDirtyBitmaps+writers) {
		t.Errorf("%d syncs for %d dirty bitmaps with a bound of %d: auto-flush did not run", got, blocks, maxDirtyBitmaps)
	}
	// What the auto-flushes made durable must check clean without any
	// explicit Flush.
	c := crashfile.FromBytes(f.Durable())
	rep, err := Check(c, CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		if !p.Fixable {
			t.Errorf("after power loss before any explicit flush: %s", p)
		}
	}
	finalChecks(t, f, img, func(got []byte) error {
		return (&crashModel{cur: model}).checkCurrent(got, 0)
	})
}

// TestConcurrentCrash: writers on interleaved sectors of their own write
// and now and then flush; whenever any Sync starts, the file may be
// snapshotted with the model as it stands. Each snapshot is crashed
// later: every write a writer had flushed (its Flush returned) before the
// snapshot must survive, whoever else was writing or flushing then.
func TestConcurrentCrash(t *testing.T) {
	withTinyBitmapCache(t, testConcurrentCrash)
}

func testConcurrentCrash(t *testing.T, bs int64) {
	const (
		writers = 4
		run     = 3
	)
	size := 12*bs - 5*SectorSize
	f, img := newTestImage(t, TypeDynamic, size, bs)
	owner := func(s int64) int { return int((s / run) % writers) }

	var mu sync.Mutex // guards m and snaps
	m := newCrashModel(size)
	type snap struct {
		f *crashfile.File
		m *crashModel
	}
	var snaps []snap
	maxSnaps := 24
	if testing.Short() {
		maxSnaps = 8
	}
	hookRNG := rand.New(rand.NewPCG(uint64(bs), 12))
	f.BeforeSync = func(n int) error {
		mu.Lock()
		defer mu.Unlock()
		if len(snaps) < maxSnaps && hookRNG.IntN(4) == 0 {
			cp := &crashModel{cur: bytes.Clone(m.cur), flushed: bytes.Clone(m.flushed), since: map[int64][]uint64{}, seed: m.seed}
			for s, v := range m.since {
				cp.since[s] = append([]uint64(nil), v...)
			}
			snaps = append(snaps, snap{f.Snapshot(), cp})
		}
		return nil
	}

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 13))
			mine := func(s int64) bool { return owner(s) == w }
			for range concurrencyIters() / 2 {
				first := (rng.Int64N(size/SectorSize/run/writers)*writers + int64(w)) * run
				off, n := first*SectorSize, min(int64(run*SectorSize), size-first*SectorSize)
				if n <= 0 {
					continue
				}
				if rng.IntN(3) == 0 && n > 1 {
					d := rng.Int64N(n - 1)
					off, n = off+d, 1+rng.Int64N(n-d-1)
				}
				var err error
				mu.Lock()
				switch rng.IntN(5) {
				case 0:
					m.zero(off, n)
					mu.Unlock()
					err = img.Zero(off, n, ZeroMode(rng.IntN(2)))
				case 1:
					p := make([]byte, n)
					m.write(p, off)
					mu.Unlock()
					_, err = img.WriteAt(p, off)
				default:
					p := pattern(byte(rng.Uint32()), int(n))
					m.write(p, off)
					mu.Unlock()
					_, err = img.WriteAt(p, off)
				}
				if err == nil && rng.IntN(4) == 0 {
					if err = img.Flush(); err == nil {
						mu.Lock()
						m.flushSectors(mine)
						mu.Unlock()
					}
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
			}
			errs <- nil
		}()
	}
	// A flusher of its own, so flushes overlap writes and each other.
	var bg background
	bg.run(func(rng *rand.Rand) error { return img.Flush() }, 14)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := bg.stop(); err != nil {
		t.Fatal(err)
	}
	img.Close()
	rng := rand.New(rand.NewPCG(uint64(bs), 15))
	for i, s := range snaps {
		for range 3 {
			if err := verifyCrashed(s.f.Crash(rng), s.m, rng); err != nil {
				t.Fatalf("snapshot %d of %d: %v", i, len(snaps), err)
			}
		}
	}
	t.Logf("%d snapshots, each crashed 3 times", len(snaps))
}
