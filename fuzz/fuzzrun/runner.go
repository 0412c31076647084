package fuzzrun

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"vhdkit/fuzz/vhdgen"
)

// Config is one `vhd fuzz run`.
type Config struct {
	Target   Target
	Out      string        // the corpus and findings folder, kept between runs
	Seed     uint64        // the case stream
	Jobs     int           // cases run at once
	Duration time.Duration // how long to run (0: until MaxCases)
	MaxCases int           // stop after this many cases (0: no limit)
	Options  vhdgen.Options
	// MinimiseTime bounds the minimisation of one finding.
	MinimiseTime time.Duration
	Log          io.Writer // progress and findings as they come
}

// Summary is what a run did.
type Summary struct {
	Cases    int64         `json:"cases"`
	Valid    int64         `json:"valid"`
	Corrupt  int64         `json:"corrupt"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	New      []*Report     `json:"new"`
	Repeated int64         `json:"repeated"` // findings of known signatures
	Known    int           `json:"known"`    // findings in OUT before the run
	First    int           `json:"first_index"`
}

// runner is a run's shared state.
type runner struct {
	cfg     Config
	version string
	next    atomic.Int64
	mu      sync.Mutex
	seen    map[string]bool // signatures known or being minimised
	sum     Summary
}

// Run fuzzes cfg.Target until the time or the case budget runs out or ctx
// ends, and returns the summary.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if cfg.Jobs < 1 {
		cfg.Jobs = 1
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("make the fuzzing folder: %w", err)
	}
	r := &runner{cfg: cfg, version: cfg.Target.Version(), seen: map[string]bool{}}
	known := knownFindings(cfg.Out, cfg.Target.Name())
	for sig := range known {
		r.seen[sig] = true
	}
	r.sum.Known = len(known)
	first, err := loadCursor(cfg.Out, cfg.Seed)
	if err != nil {
		return nil, err
	}
	r.next.Store(int64(first))
	r.sum.First = first
	start := time.Now()
	// Minimising a finding may outlast the run's time (by MinimiseTime at
	// most), not an interrupt.
	root, runCtx := ctx, ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var wg sync.WaitGroup
	for j := range cfg.Jobs {
		wg.Go(func() { r.worker(runCtx, root, j) })
	}
	stop := r.progress(ctx, start)
	wg.Wait()
	stop()
	r.sum.Elapsed = time.Since(start)
	os.RemoveAll(filepath.Join(cfg.Out, "work"))
	return &r.sum, saveCursor(cfg.Out, cfg.Seed, int(r.next.Load()))
}

// worker runs cases until the run ends.
func (r *runner) worker(ctx, root context.Context, j int) {
	work := filepath.Join(r.cfg.Out, "work", strconv.Itoa(j))
	for ctx.Err() == nil {
		i := int(r.next.Add(1) - 1)
		if r.cfg.MaxCases > 0 && i-r.sum.First >= r.cfg.MaxCases {
			r.next.Add(-1)
			return
		}
		c := vhdgen.Generate(r.cfg.Seed, i, r.cfg.Options)
		b, o, err := r.try(ctx, c, work)
		if err != nil || ctx.Err() != nil {
			continue // a case the reference cannot hold, or the run ended mid-case
		}
		r.count(b)
		if f := Classify(r.cfg.Target, b, o); f != nil {
			r.found(root, b, f, work)
		}
	}
}

// try builds c in work and runs the target on it.
func (r *runner) try(ctx context.Context, c vhdgen.Case, work string) (*vhdgen.Built, Observation, error) {
	b, err := c.Build()
	if err != nil {
		return nil, Observation{}, err
	}
	dir := filepath.Join(work, "case")
	os.RemoveAll(dir)
	top, err := b.Write(dir)
	if err != nil {
		return nil, Observation{}, err
	}
	defer os.RemoveAll(dir)
	return b, r.cfg.Target.Read(ctx, top, work), nil
}

func (r *runner) count(b *vhdgen.Built) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sum.Cases++
	if b.View == nil {
		r.sum.Corrupt++
	} else {
		r.sum.Valid++
	}
}

// found minimises and writes a finding of a new signature.
func (r *runner) found(ctx context.Context, b *vhdgen.Built, f *Finding, work string) {
	r.mu.Lock()
	if r.seen[f.Signature] {
		r.sum.Repeated++
		r.mu.Unlock()
		return
	}
	r.seen[f.Signature] = true
	r.mu.Unlock()
	orig := b.Case.Describe()
	mb, mf, cmds, shrunk := r.minimise(ctx, b, f, work)
	rep := &Report{ID: findingID(r.cfg.Target.Name(), f.Signature), Target: r.cfg.Target.Name(), TargetVersion: r.version,
		Kind: mf.Kind, Detail: mf.Detail, Signature: f.Signature, Command: cmds, Seed: b.Case.Seed, Index: b.Case.Index,
		Expected: ExpectedOf(mb), Original: orig, Minimised: shrunk, Case: mb.Case, Found: time.Now().UTC()}
	// As they would run in the finding's folder.
	caseDir, findDir := filepath.Join(work, "case"), filepath.Join(r.cfg.Out, "findings", rep.ID)
	for i, c := range rep.Command {
		rep.Command[i] = strings.ReplaceAll(c, caseDir, findDir)
	}
	rep.Detail = strings.ReplaceAll(rep.Detail, caseDir, findDir)
	dir, err := writeFinding(r.cfg.Out, rep, mb)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		fmt.Fprintf(r.cfg.Log, "finding %s could not be written: %v\n", rep.ID, err)
		return
	}
	r.sum.New = append(r.sum.New, rep)
	fmt.Fprintf(r.cfg.Log, "finding %s: %s: %s\n  %s\n", rep.ID, rep.Kind, rep.Detail, dir)
}

// progress prints a line every 10 seconds until stopped.
func (r *runner) progress(ctx context.Context, start time.Time) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.mu.Lock()
				n, f := r.sum.Cases, len(r.sum.New)
				r.mu.Unlock()
				el := time.Since(start).Seconds()
				fmt.Fprintf(r.cfg.Log, "%d cases in %.0fs (%.1f/s), %d new findings\n", n, el, float64(n)/el, f)
			}
		}
	}()
	return func() { close(done) }
}

// The cursor: where the case stream of each seed stopped, so the next
// run in the same folder goes on with new cases.
func cursorPath(out string) string { return filepath.Join(out, "corpus", "cursor.json") }

func loadCursor(out string, seed uint64) (int, error) {
	data, err := os.ReadFile(cursorPath(out))
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var cur map[string]int
	if err := json.Unmarshal(data, &cur); err != nil {
		return 0, fmt.Errorf("%s is damaged (%w): remove it to start the case stream again", cursorPath(out), err)
	}
	return cur[strconv.FormatUint(seed, 10)], nil
}

func saveCursor(out string, seed uint64, next int) error {
	cur := map[string]int{}
	if data, err := os.ReadFile(cursorPath(out)); err == nil {
		json.Unmarshal(data, &cur)
	}
	cur[strconv.FormatUint(seed, 10)] = next
	data, _ := json.MarshalIndent(cur, "", "  ")
	if err := os.MkdirAll(filepath.Dir(cursorPath(out)), 0o755); err != nil {
		return err
	}
	tmp := cursorPath(out) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, cursorPath(out))
}
