package chains

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"vhdkit/engine"
)

// liveWriters writes the chain from n goroutines until stop is closed.
// Writer w owns the 64 KiB granules g with g%n == w, so each keeps the
// model of its own granules exactly, in the order its writes were
// acknowledged. Writes are random pieces of 512 B to 64 KiB; one in eight
// is a Zero (whole blocks may be freed) and one in eight writes zeros
// (elided where no layer below holds data).
type liveWriters struct {
	wg   sync.WaitGroup
	stop chan struct{}
	mu   sync.Mutex
	errs []error
	ops  int
}

func startWriters(c *Chain, model []byte, n int, seed uint64) *liveWriters {
	lw := &liveWriters{stop: make(chan struct{})}
	granules := int64(len(model)) >> dirtyShift
	for w := range n {
		lw.wg.Add(1)
		go func() {
			defer lw.wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			ops := 0
			for {
				select {
				case <-lw.stop:
					lw.mu.Lock()
					lw.ops += ops
					lw.mu.Unlock()
					return
				default:
				}
				g := rng.Int64N(granules/int64(n))*int64(n) + int64(w)
				if g >= granules {
					continue
				}
				off := g<<dirtyShift + 512*rng.Int64N(127)
				l := 512 * (1 + rng.Int64N((g+1)<<dirtyShift/512-off/512))
				l = min(l, (g+1)<<dirtyShift-off)
				if err := liveOp(c, rng, model, off, l); err != nil {
					lw.mu.Lock()
					lw.errs = append(lw.errs, err)
					lw.mu.Unlock()
					return
				}
				ops++
			}
		}()
	}
	return lw
}

func liveOp(c *Chain, rng *rand.Rand, model []byte, off, l int64) error {
	switch rng.IntN(8) {
	case 0:
		if err := c.Zero(off, l, engine.ZeroMayDeallocate); err != nil {
			return fmt.Errorf("zero %d+%d: %w", off, l, err)
		}
		clear(model[off : off+l])
	case 1:
		p := make([]byte, l)
		if _, err := c.WriteAt(p, off); err != nil {
			return fmt.Errorf("write zeros %d+%d: %w", off, l, err)
		}
		clear(model[off : off+l])
	default:
		p := randBytes(rng, int(l))
		if _, err := c.WriteAt(p, off); err != nil {
			return fmt.Errorf("write %d+%d: %w", off, l, err)
		}
		copy(model[off:], p)
	}
	return nil
}

// halt stops the writers and fails the test on any error they met.
func (lw *liveWriters) halt(t *testing.T) int {
	t.Helper()
	close(lw.stop)
	lw.wg.Wait()
	for _, err := range lw.errs {
		t.Error(err)
	}
	return lw.ops
}

// newLiveBase makes a dynamic base image with random data and its model.
func newLiveBase(t *testing.T, dir string, size int64, seed uint64) (string, []byte) {
	t.Helper()
	base := filepath.Join(dir, "base.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: size, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := &Chain{layers: []Layer{{Image: img, Path: base}}}
	c.wire()
	model := make([]byte, size)
	randomOps(t, rand.New(rand.NewPCG(seed, 1)), c, model, 40)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return base, model
}

// layerPaths lists the chain's files, top first.
func layerPaths(c *Chain) []string {
	var out []string
	for _, l := range c.Layers() {
		out = append(out, l.Path)
	}
	return out
}

// noMergeFiles fails if a journal, mark or temporary file is left in dir.
func noMergeFiles(t *testing.T, dir string) {
	t.Helper()
	for _, pat := range []string{"*.merging", "*.merge-target", "*.creating", "*.tmp"} {
		if left, _ := filepath.Glob(filepath.Join(dir, pat)); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	}
}

// TestLiveChangesUnderWrites: snapshots, merges of the top and of middle
// layers, one after another while four goroutines write; the chain ends
// equal to the model of every acknowledged write, and so does every
// image it leaves, reopened; every layer passes check.
func TestLiveChangesUnderWrites(t *testing.T) {
	dir := t.TempDir()
	base, model := newLiveBase(t, dir, 48<<20, 3)
	c, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	lw := startWriters(c, model, 4, 7)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 5))
	for step := range 24 {
		depth := c.Depth()
		switch {
		case depth == 1 || (depth < 4 && rng.IntN(2) == 0):
			if err := c.Snapshot(filepath.Join(dir, fmt.Sprintf("s%d.vhd", step))); err != nil {
				t.Fatalf("step %d: snapshot: %v", step, err)
			}
		case depth > 2 && rng.IntN(2) == 0:
			if _, err := c.Merge(ctx, c.Layers()[1].Path, nil); err != nil {
				t.Fatalf("step %d: merge middle: %v", step, err)
			}
		default:
			if _, err := c.Merge(ctx, "", nil); err != nil {
				t.Fatalf("step %d: merge top: %v", step, err)
			}
		}
	}
	ops := lw.halt(t)
	t.Logf("%d writes during 24 live changes; chain now %v", ops, layerPaths(c))
	verify(t, c, model, "live chain")
	paths := layerPaths(c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, paths...)
	noMergeFiles(t, dir)
	openVerify(t, paths[0], model, Options{})
}

// TestLiveSnapshotAndView: a view of the layer under a live snapshot
// keeps reading the frozen point while the top is written; a merge that
// would change a layer the view holds is refused until it is closed.
func TestLiveSnapshotAndView(t *testing.T) {
	dir := t.TempDir()
	base, model := newLiveBase(t, dir, 16<<20, 4)
	c, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	top := filepath.Join(dir, "top.vhd")
	if err := c.Snapshot(top); err != nil {
		t.Fatal(err)
	}
	frozen := append([]byte(nil), model...)
	v, err := c.View(base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.View(top); err == nil {
		t.Error("a view of the written top was allowed")
	}
	lw := startWriters(c, model, 2, 9)
	verify(t, v, frozen, "view during writes")
	lw.halt(t)
	verify(t, v, frozen, "view after writes")
	if _, err := c.Merge(context.Background(), "", nil); !errors.Is(err, ErrLayerInUse) {
		t.Fatalf("merge into a viewed layer: %v, want ErrLayerInUse", err)
	}
	if _, err := os.Stat(journalPath(top)); err == nil {
		t.Error("a refused merge left a journal")
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Merge(context.Background(), "", nil); err != nil {
		t.Fatal(err)
	}
	verify(t, c, model, "after merge")
	if fileExists(top) {
		t.Error("merged top still exists")
	}
}

// TestLiveViewOutlivesChain: a view keeps its images open after the
// chain that cut it is closed.
func TestLiveViewOutlivesChain(t *testing.T) {
	dir := t.TempDir()
	base, model := newLiveBase(t, dir, 8<<20, 6)
	c, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Snapshot(filepath.Join(dir, "top.vhd")); err != nil {
		t.Fatal(err)
	}
	v, err := c.View(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	verify(t, v, model, "view after the chain closed")
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLiveUndo: an undo disk committed while written continues on a
// fresh one (writes after the switch land there); a commit with no
// writes leaves the base equal to the disk; a discard then drops only
// what came after it.
func TestLiveUndo(t *testing.T) {
	dir := t.TempDir()
	base, model := newLiveBase(t, dir, 16<<20, 8)
	c, _, err := OpenUndo(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lw := startWriters(c, model, 3, 11)
	if _, err := c.UndoCommit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	lw.halt(t)
	verify(t, c, model, "after a commit under writes")
	if got := layerPaths(c); len(got) != 2 || got[0] != UndoPath(base) {
		t.Fatalf("after commit the chain is %v, want a fresh undo disk over the base", got)
	}
	if _, err := c.UndoCommit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	verify(t, c.Layers()[1].Image, model, "the base after a quiet commit")
	committed := append([]byte(nil), model...)
	lw = startWriters(c, model, 2, 12)
	lw.halt(t)
	if err := c.UndoDiscard(); err != nil {
		t.Fatal(err)
	}
	verify(t, c, committed, "after discard")
	if err := c.Snapshot(filepath.Join(dir, "x.vhd")); err == nil {
		t.Error("a snapshot of an undo disk was allowed")
	}
	noMergeFiles(t, dir)
	openVerify(t, base, committed, Options{})
	checkClean(t, base, UndoPath(base))
}
