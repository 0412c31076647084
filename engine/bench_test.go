package engine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Benchmarks of the engine against plain reads and writes of a raw file,
// measured side by side in the same loop: each iteration runs a batch of
// operations on the raw file and the same number on the image, timing
// the two separately, so a noisy machine disturbs both alike. Each
// benchmark reports
//
//	raw-ns/op   one operation on the raw file (os.File.ReadAt / WriteAt),
//	            wall time
//	vhd-ns/op   one operation on the image, wall time
//	x-raw       raw-ns/op / vhd-ns/op: the image's speed as a fraction of
//	            raw (the targets: reads >= 0.9, 4 KiB random writes with
//	            the final flush >= 0.5)
//	x-raw-cpu   the same ratio of the CPU time of the threads doing the
//	            I/O (user and system): what reads from the page cache
//	            cost, undisturbed by other processes taking the CPU
//	x-raw-writes  (writes only) x-raw of the writes without the final
//	            flushes
//
// ns/op is the pair together. scripts/bench-engine.sh runs them with
// -count and prints the ratios; docs/BENCHMARKS.md has the numbers.

const (
	benchDataSize  = 256 << 20 // data allocated in the read fixtures
	benchWriteSize = 4 << 30   // virtual size of the write targets
	benchBatch     = 32        // operations per side per timed batch
)

// sideBySide accumulates the time spent on each side.
type sideBySide struct {
	mu             sync.Mutex
	raw, vhd       time.Duration // wall
	rawCPU, vhdCPU time.Duration // thread CPU
	ops            int64
}

// clock reads the wall clock and the calling thread's CPU clock; callers
// lock their goroutine to its thread.
type clock struct{ wall, cpu time.Duration }

var benchStart = time.Now()

func now() clock {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return clock{time.Since(benchStart), time.Duration(ts.Nano())}
}

// add records a batch timed as t0 (start), t1 (raw done), t2 (image done).
func (s *sideBySide) add(t0, t1, t2 clock, ops int64) {
	s.mu.Lock()
	s.raw += t1.wall - t0.wall
	s.vhd += t2.wall - t1.wall
	s.rawCPU += t1.cpu - t0.cpu
	s.vhdCPU += t2.cpu - t1.cpu
	s.ops += ops
	s.mu.Unlock()
}

func (s *sideBySide) report(b *testing.B) {
	if s.ops == 0 || s.vhd == 0 || s.vhdCPU == 0 {
		return
	}
	b.ReportMetric(float64(s.raw.Nanoseconds())/float64(s.ops), "raw-ns/op")
	b.ReportMetric(float64(s.vhd.Nanoseconds())/float64(s.ops), "vhd-ns/op")
	b.ReportMetric(float64(s.raw)/float64(s.vhd), "x-raw")
	b.ReportMetric(float64(s.rawCPU)/float64(s.vhdCPU), "x-raw-cpu")
}

// readFixture is the same 256 MiB of random data as a raw file, a fixed
// image and a dynamic image (every block allocated), in the page cache;
// and a dynamic image with the same data but for the last 4 KiB of every
// block, which stay unwritten, so no block is full and reads consult the
// sector bitmap.
type readFixture struct {
	raw                     *os.File
	fixed, dynamic, partial *Image
}

// partialHole is what the partial image leaves unwritten at the end of
// every 2 MiB block.
const partialHole = 4096

func newReadFixture(b *testing.B) *readFixture {
	b.Helper()
	dir := b.TempDir()
	raw, err := os.Create(filepath.Join(dir, "data.raw"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	fx := &readFixture{raw: raw}
	var imgs []*Image
	for i, typ := range []DiskType{TypeFixed, TypeDynamic, TypeDynamic} {
		path := filepath.Join(dir, fmt.Sprintf("%d-%s.vhd", i, typ))
		img, err := Create(path, CreateOptions{Type: typ, Size: benchDataSize})
		if err != nil {
			b.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	for off := int64(0); off < benchDataSize; off += int64(len(buf)) {
		rng.Read(buf)
		if _, err := raw.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		for i, img := range imgs {
			if _, err := img.WriteAt(partialBuf(buf, off, i == 2), off); err != nil {
				b.Fatal(err)
			}
		}
	}
	for i, img := range imgs {
		path := img.Name()
		if err := img.Close(); err != nil {
			b.Fatal(err)
		}
		if imgs[i], err = Open(path, Options{ReadOnly: true}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { imgs[i].Close() })
	}
	fx.fixed, fx.dynamic, fx.partial = imgs[0], imgs[1], imgs[2]
	// Warm the page cache and check the images read what raw does.
	want, got := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < benchDataSize; off += int64(len(want)) {
		raw.ReadAt(want, off)
		for i, img := range imgs {
			w := want
			if i == 2 {
				w = append(partialBuf(want, off, true), make([]byte, len(want)-len(partialBuf(want, off, true)))...)
			}
			if _, err := img.ReadAt(got, off); err != nil || string(got) != string(w) {
				b.Fatalf("%s image %d reads differently from raw at %#x (%v)", img.Type(), i, off, err)
			}
		}
	}
	return fx
}

// partialBuf is buf, written at off, as the partial image holds it:
// without the last partialHole bytes of a 2 MiB block.
func partialBuf(buf []byte, off int64, partial bool) []byte {
	if partial && (off+int64(len(buf)))%(2<<20) == 0 {
		return buf[:len(buf)-partialHole]
	}
	return buf
}

func BenchmarkRead(b *testing.B) {
	fx := newReadFixture(b)
	for _, kind := range []struct {
		name string
		img  *Image
	}{{"fixed", fx.fixed}, {"dynamic", fx.dynamic}, {"dynamic-partial", fx.partial}} {
		b.Run("seq1M/"+kind.name, func(b *testing.B) { benchSeqRead(b, fx.raw, kind.img) })
		b.Run("rand4K/"+kind.name, func(b *testing.B) { benchRandRead(b, fx.raw, kind.img, false) })
		b.Run("rand4K-parallel/"+kind.name, func(b *testing.B) { benchRandRead(b, fx.raw, kind.img, true) })
	}
}

// benchSeqRead reads the disk front to back in 1 MiB reads, wrapping.
func benchSeqRead(b *testing.B, raw *os.File, img *Image) {
	const n = 1 << 20
	buf := make([]byte, n)
	var s sideBySide
	b.SetBytes(n)
	b.ResetTimer()
	var rawOff, vhdOff int64
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for done := 0; done < b.N; {
		c := min(benchBatch, b.N-done)
		t0 := now()
		for range c {
			if _, err := raw.ReadAt(buf, rawOff); err != nil {
				b.Fatal(err)
			}
			rawOff = (rawOff + n) % benchDataSize
		}
		t1 := now()
		for range c {
			if _, err := img.ReadAt(buf, vhdOff); err != nil {
				b.Fatal(err)
			}
			vhdOff = (vhdOff + n) % benchDataSize
		}
		s.add(t0, t1, now(), int64(c))
		done += c
	}
	s.report(b)
}

// benchRandRead reads 4 KiB at random 4 KiB-aligned offsets; the same
// offsets on both sides.
func benchRandRead(b *testing.B, raw *os.File, img *Image, parallel bool) {
	const n = 4096
	var s sideBySide
	b.SetBytes(n)
	worker := randomPairs(&s, benchDataSize, n,
		func(buf []byte, off int64) error { _, err := raw.ReadAt(buf, off); return err },
		func(buf []byte, off int64) error { _, err := img.ReadAt(buf, off); return err })
	runSideBySide(b, parallel, worker)
	s.report(b)
}

// randomPairs is a runSideBySide worker: batches of n-byte operations at
// random n-aligned offsets below span, timed first on the raw file
// (onRaw), then at the same offsets on the image (onImg). buf is the
// worker's own n-byte buffer.
func randomPairs(s *sideBySide, span, n int64, onRaw, onImg func(buf []byte, off int64) error) func(*rand.Rand, func(int) int) {
	return func(rng *rand.Rand, next func(int) int) {
		buf := make([]byte, n)
		offs := make([]int64, benchBatch)
		for {
			c := next(benchBatch)
			if c == 0 {
				return
			}
			for i := range c {
				offs[i] = rng.Int64N(span/n) * n
			}
			t0 := now()
			for _, off := range offs[:c] {
				if err := onRaw(buf, off); err != nil {
					panic(err)
				}
			}
			t1 := now()
			for _, off := range offs[:c] {
				if err := onImg(buf, off); err != nil {
					panic(err)
				}
			}
			s.add(t0, t1, now(), int64(c))
		}
	}
}

// runSideBySide runs worker on one goroutine, or on GOMAXPROCS of them
// with b.RunParallel; next(k) hands out up to k of the b.N operations.
func runSideBySide(b *testing.B, parallel bool, worker func(rng *rand.Rand, next func(int) int)) {
	b.ResetTimer()
	if !parallel {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		left := b.N
		worker(rand.New(rand.NewPCG(1, 2)), func(k int) int {
			c := min(k, left)
			left -= c
			return c
		})
		return
	}
	var seed sync.Mutex
	seq := uint64(0)
	b.RunParallel(func(pb *testing.PB) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		seed.Lock()
		seq++
		rng := rand.New(rand.NewPCG(seq, 7))
		seed.Unlock()
		worker(rng, func(k int) int {
			c := 0
			for c < k && pb.Next() {
				c++
			}
			return c
		})
	})
}

// BenchmarkWrite4K writes 4 KiB at random aligned offsets into a fresh
// 4 GiB dynamic image (allocating blocks as it goes) and, side by side,
// into a fresh sparse raw file of the same size; no flush per write, one
// at the end, counted on each side.
func BenchmarkWrite4K(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		name := "dynamic"
		if parallel {
			name = "dynamic-parallel"
		}
		b.Run(name, func(b *testing.B) { benchWrite(b, parallel) })
	}
}

func benchWrite(b *testing.B, parallel bool) {
	const n = 4096
	b.StopTimer()
	dir := b.TempDir()
	raw, err := os.Create(filepath.Join(dir, "w.raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	if err := raw.Truncate(benchWriteSize); err != nil {
		b.Fatal(err)
	}
	img, err := Create(filepath.Join(dir, "w.vhd"), CreateOptions{Type: TypeDynamic, Size: benchWriteSize})
	if err != nil {
		b.Fatal(err)
	}
	defer img.Close()
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{2}).Read(data)
	var s sideBySide
	b.SetBytes(n)
	b.StartTimer()
	// The writes come from data (random): the per-worker buffer is zeros,
	// which the image would elide.
	runSideBySide(b, parallel, randomPairs(&s, benchWriteSize, n,
		func(_ []byte, off int64) error { _, err := raw.WriteAt(data, off); return err },
		func(_ []byte, off int64) error { _, err := img.WriteAt(data, off); return err }))
	if s.vhd > 0 {
		// The write phase alone, before the flushes are added in.
		b.ReportMetric(float64(s.raw)/float64(s.vhd), "x-raw-writes")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0 := now()
	if err := unix.Fdatasync(int(raw.Fd())); err != nil {
		b.Fatal(err)
	}
	t1 := now()
	if err := img.Flush(); err != nil {
		b.Fatal(err)
	}
	s.add(t0, t1, now(), 0)
	b.StopTimer()
	s.report(b)
}

// BenchmarkOpenEmpty2040G opens (and closes) an empty dynamic image of the
// largest size, read-only and for writing: a 4 MiB BAT to read and
// decode. Targets: under 50 ms and 16 MiB allocated per open.
func BenchmarkOpenEmpty2040G(b *testing.B) {
	path := filepath.Join(b.TempDir(), "big.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: MaxSize})
	if err != nil {
		b.Fatal(err)
	}
	if err := img.Close(); err != nil {
		b.Fatal(err)
	}
	for _, ro := range []bool{true, false} {
		name := "rw"
		if ro {
			name = "ro"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			for range b.N {
				img, err := Open(path, Options{ReadOnly: ro})
				if err != nil {
					b.Fatal(err)
				}
				if img.Size() != MaxSize {
					b.Fatalf("size %d", img.Size())
				}
				if err := img.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/(1<<20), "MiB/op")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/op")
		})
	}
}
