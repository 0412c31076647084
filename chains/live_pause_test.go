package chains

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"vhdkit/engine"
)

// BenchmarkLivePause measures the pause live changes impose on a guest:
// 32 goroutines write 4 KiB at random places of the first 256 MiB (the
// working set) of a 2 GiB disk on the real disk (/var/tmp, not a tmpfs),
// each timing its requests (queue depth 32), while the benchmark cuts live snapshots and merges the top into
// its parent, one after another with quiet time between. It reports the
// request latency (p50, p99, max) of requests that overlapped no live
// change, a snapshot, or a merge, and how long the write gate was held:
// for a snapshot's swap, for a merge's final swap, and for the merge's
// other gates (reopening the target, starting the dirty map). Run it
// with
//
//	go test ./chains -run '^$' -bench LivePause -benchtime 1x -v
//
// VHDKIT_PAUSE_DIR chooses another folder; VHDKIT_PAUSE_ROUNDS the number
// of snapshot+merge rounds (default 10); VHDKIT_PAUSE_IOPS caps the
// stream's rate (all writers together; by default as fast as they go).
func BenchmarkLivePause(b *testing.B) {
	rounds, iops := 10, 0
	if s := os.Getenv("VHDKIT_PAUSE_ROUNDS"); s != "" {
		fmt.Sscan(s, &rounds)
	}
	if s := os.Getenv("VHDKIT_PAUSE_IOPS"); s != "" {
		fmt.Sscan(s, &iops)
	}
	parent := os.Getenv("VHDKIT_PAUSE_DIR")
	if parent == "" {
		parent = "/var/tmp"
	}
	for b.Loop() {
		dir, err := os.MkdirTemp(parent, "vhdkit-pause-")
		if err != nil {
			b.Fatal(err)
		}
		r := runPause(b, dir, rounds, iops)
		os.RemoveAll(dir)
		r.report(b)
	}
}

const (
	pauseDiskSize = 2 << 30
	pauseSpan     = 256 << 20
	pauseDepth    = 32
	pauseIO       = 4 << 10
)

// pauseRun holds what one measurement saw.
type pauseRun struct {
	mu       sync.Mutex
	requests []pauseRequest // every write, start and duration
	windows  []pauseWindow  // every live change, start and end
	gates    map[string][]time.Duration
	writes   atomic.Int64
	every    time.Duration // each writer's pace; 0: none
}

type pauseRequest struct {
	start time.Time
	took  time.Duration
}

type pauseWindow struct {
	kind       string
	start, end time.Time
}

func runPause(b *testing.B, dir string, rounds, iops int) *pauseRun {
	base := filepath.Join(dir, "base.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: pauseDiskSize})
	if err != nil {
		b.Fatal(err)
	}
	img.Close()
	c, err := Open(base, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Snapshot(filepath.Join(dir, "s.vhd")); err != nil {
		b.Fatal(err)
	}
	r := &pauseRun{gates: map[string][]time.Duration{}}
	if iops > 0 {
		r.every = time.Duration(pauseDepth) * time.Second / time.Duration(iops)
	}
	defer r.timeGates()()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range pauseDepth {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.write(b, c, uint64(w), stop)
		}()
	}
	time.Sleep(3 * time.Second) // without a live change
	ctx := context.Background()
	for i := range rounds {
		r.during("snapshot", func() error { return c.Snapshot(filepath.Join(dir, fmt.Sprintf("s%d.vhd", i))) })
		time.Sleep(500 * time.Millisecond)
		r.during("merge", func() error { _, err := c.Merge(ctx, "", nil); return err })
		time.Sleep(500 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	return r
}

// write writes until stop, timing each request.
func (r *pauseRun) write(b *testing.B, c *Chain, seed uint64, stop chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, 1))
	buf := randBytes(rng, pauseIO)
	var mine []pauseRequest
	next := time.Now()
	for {
		select {
		case <-stop:
			r.mu.Lock()
			r.requests = append(r.requests, mine...)
			r.mu.Unlock()
			return
		default:
		}
		off := rng.Int64N(pauseSpan/pauseIO) * pauseIO
		if r.every > 0 {
			next = next.Add(r.every)
			time.Sleep(time.Until(next))
		}
		start := time.Now()
		if _, err := c.WriteAt(buf, off); err != nil {
			b.Error(err)
			return
		}
		mine = append(mine, pauseRequest{start, time.Since(start)})
		r.writes.Add(1)
	}
}

// during runs a live change, keeping its window.
func (r *pauseRun) during(kind string, change func() error) {
	w := pauseWindow{kind: kind, start: time.Now()}
	if err := change(); err != nil {
		panic(fmt.Sprintf("%s: %v", kind, err))
	}
	w.end = time.Now()
	r.mu.Lock()
	r.windows = append(r.windows, w)
	r.mu.Unlock()
}

// timeGates times each exclusive hold of the gate, from asking for it
// (new requests wait from then) to its release, by what held it, and the
// steps inside the swaps (from one named point to the next).
func (r *pauseRun) timeGates() (restore func()) {
	var asked, last time.Time
	what, lastPoint := "", ""
	liveHook = func(p string) {
		now := time.Now()
		r.mu.Lock()
		defer r.mu.Unlock()
		switch p {
		case "gate:wait":
			asked, what, lastPoint = now, "merge: other gates", ""
		case "snapshot:gate":
			what, last, lastPoint = "snapshot: swap", now, p
			return
		case "merge:gate":
			what, last, lastPoint = "merge: final swap", now, p
			return
		case "gate:release":
			r.gates[what] = append(r.gates[what], now.Sub(asked))
		}
		if lastPoint != "" { // a step inside a swap
			step := "  " + lastPoint + " to " + p
			r.gates[step] = append(r.gates[step], now.Sub(last))
			last, lastPoint = now, p
		}
		if p == "gate:release" {
			lastPoint = ""
		}
	}
	return func() { liveHook = nil }
}

// report logs the latencies by class and the gate holds.
func (r *pauseRun) report(b *testing.B) {
	classes := map[string][]time.Duration{}
	for _, q := range r.requests {
		classes[r.classOf(q)] = append(classes[r.classOf(q)], q.took)
	}
	rate := "as fast as they go"
	if r.every > 0 {
		rate = fmt.Sprintf("paced to %d/s", int64(pauseDepth)*int64(time.Second/r.every))
	}
	b.Logf("%d writes of 4 KiB at QD%d (%s), %d snapshots and %d merges of the top", r.writes.Load(), pauseDepth, rate, len(r.windows)/2, len(r.windows)/2)
	b.Logf("%-24s %8s %10s %10s %10s", "requests", "count", "p50", "p99", "max")
	for _, k := range []string{"no live change", "during a snapshot", "during a merge"} {
		d := classes[k]
		b.Logf("%-24s %8d %10s %10s %10s", k, len(d), pct(d, 50), pct(d, 99), pct(d, 100))
		if len(d) > 0 {
			b.ReportMetric(float64(pctDur(d, 99).Microseconds())/1000, "ms-p99-"+shortClass(k))
		}
	}
	ops := map[string][]time.Duration{}
	for _, w := range r.windows {
		ops[w.kind] = append(ops[w.kind], w.end.Sub(w.start))
	}
	for _, k := range []string{"snapshot", "merge"} {
		d := ops[k]
		b.Logf("%-24s %8d %10s %10s %10s", "a "+k+" took", len(d), pct(d, 50), pct(d, 99), pct(d, 100))
	}
	b.Logf("%-24s %8s %10s %10s %10s", "gate held", "count", "p50", "p99", "max")
	for _, k := range slices.Sorted(maps.Keys(r.gates)) {
		d := r.gates[k]
		b.Logf("%-24s %8d %10s %10s %10s", k, len(d), pct(d, 50), pct(d, 99), pct(d, 100))
	}
	if d := r.gates["merge: final swap"]; len(d) > 0 {
		b.ReportMetric(float64(pctDur(d, 100).Microseconds())/1000, "ms-max-merge-swap")
	}
}

func (r *pauseRun) classOf(q pauseRequest) string {
	end := q.start.Add(q.took)
	for _, w := range r.windows {
		if q.start.Before(w.end) && end.After(w.start) {
			return "during a " + w.kind
		}
	}
	return "no live change"
}

func shortClass(k string) string {
	switch k {
	case "during a snapshot":
		return "snapshot"
	case "during a merge":
		return "merge"
	}
	return "idle"
}

func pctDur(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

func pct(d []time.Duration, p int) string {
	return pctDur(d, p).Round(10 * time.Microsecond).String()
}
