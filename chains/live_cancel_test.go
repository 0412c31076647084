package chains

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

func randFrom(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 3)) }

// imagesIn lists the images in dir.
func imagesIn(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, pat := range []string{"*.vhd", "*.vud"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m...)
	}
	return out
}

// liveChainOf opens base and cuts n live snapshots (s0.vhd ...) over it,
// each written a little: base <- s0 <- ... <- s(n-1), the last the top.
func liveChainOf(t *testing.T, dir, base string, model []byte, n int, seed uint64) *Chain {
	t.Helper()
	c, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := randFrom(seed)
	for i := range n {
		if err := c.Snapshot(filepath.Join(dir, fmt.Sprintf("s%d.vhd", i))); err != nil {
			t.Fatal(err)
		}
		randomOps(t, rng, c, model, 20)
	}
	return c
}

// cancelAfterFirstPiece is a progress function that cancels the merge's
// context once it has copied something.
func cancelAfterFirstPiece() (context.Context, func(done, total int64)) {
	ctx, cancel := context.WithCancel(context.Background())
	return ctx, func(done, total int64) {
		if done > 0 {
			cancel()
		}
	}
}

// TestLiveMergeCancelled: a live merge (of the top, of a middle layer)
// cancelled half-way returns ErrMergeInterrupted; the chain keeps serving
// the same data while written; the journal says the copy did not finish;
// a live change other than that merge is refused until it is finished;
// and `vhd merge` of the layer, after the chain is closed, finishes it.
func TestLiveMergeCancelled(t *testing.T) {
	for _, middle := range []bool{false, true} {
		t.Run(fmt.Sprintf("middle=%v", middle), func(t *testing.T) {
			dir := t.TempDir()
			base, model := newLiveBase(t, dir, 16<<20, 16)
			c := liveChainOf(t, dir, base, model, 3, 16)
			defer c.Close()
			lw := startWriters(c, model, 2, 17)
			layers := layerPaths(c)
			merged, layer := layers[0], ""
			if middle {
				merged, layer = layers[1], layers[1]
			}
			ctx, progress := cancelAfterFirstPiece()
			_, err := c.Merge(ctx, layer, progress)
			if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrMergeInterrupted) {
				lw.halt(t)
				t.Fatalf("cancelled merge: %v, want context.Canceled and ErrMergeInterrupted", err)
			}
			lw.halt(t)
			verify(t, c, model, "after the cancelled merge")
			j, err := readJournal(merged)
			if err != nil || j.Copied {
				t.Fatalf("journal after the cancelled merge: %+v, %v; want one saying the copy is not done", j, err)
			}
			if err := c.Snapshot(filepath.Join(dir, "late.vhd")); !errors.Is(err, ErrMergeInterrupted) {
				t.Fatalf("a snapshot while a merge is unfinished: %v, want ErrMergeInterrupted", err)
			}
			if fileExists(filepath.Join(dir, "late.vhd")) {
				t.Fatal("the refused snapshot left its new top")
			}
			target := layers[indexOfPath(layers, merged)+1]
			if v, err := c.View(target); !errors.Is(err, ErrMergeInterrupted) {
				if err == nil {
					v.Close()
				}
				t.Fatalf("a view of the half-merged target: %v, want ErrMergeInterrupted", err)
			}
			randomOps(t, randFrom(18), c, model, 20)
			verify(t, c, model, "written after the cancelled merge")
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := Merge(context.Background(), merged, MergeOptions{}); err != nil {
				t.Fatalf("vhd merge %s after the chain closed: %v", merged, err)
			}
			top := layers[0]
			if !middle {
				top = layers[1]
			}
			openVerify(t, top, model, Options{})
			if fileExists(merged) {
				t.Fatalf("%s is still there after the merge finished", merged)
			}
			noMergeFiles(t, dir)
			checkClean(t, imagesIn(t, dir)...)
		})
	}
}

func indexOfPath(paths []string, p string) int {
	for i, q := range paths {
		if q == p {
			return i
		}
	}
	return -1
}

// TestLiveUndoCommitCancelled: an undo commit cancelled half-way has
// copied part of the undo disk into the image; a discard then would
// leave that part in the image, so it is refused until the commit is run
// again, which finishes it while the disk is written.
func TestLiveUndoCommitCancelled(t *testing.T) {
	dir := t.TempDir()
	base, model := newLiveBase(t, dir, 16<<20, 21)
	c, _, err := OpenUndo(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	randomOps(t, randFrom(21), c, model, 30)
	lw := startWriters(c, model, 2, 22)
	ctx, progress := cancelAfterFirstPiece()
	if _, err := c.UndoCommit(ctx, progress); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrMergeInterrupted) {
		lw.halt(t)
		t.Fatalf("cancelled undo commit: %v", err)
	}
	if err := c.UndoDiscard(); !errors.Is(err, ErrMergeInterrupted) {
		lw.halt(t)
		t.Fatalf("a discard after a cancelled commit: %v, want ErrMergeInterrupted", err)
	}
	_, err = c.UndoCommit(context.Background(), nil)
	lw.halt(t)
	if err != nil {
		t.Fatalf("the undo commit run again: %v", err)
	}
	verify(t, c, model, "after the commit ran again")
	// Writes after its swap went to the fresh undo disk: a quiet commit
	// puts them in the image too.
	if _, err := c.UndoCommit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	committed := append([]byte(nil), model...)
	randomOps(t, randFrom(23), c, model, 10)
	if err := c.UndoDiscard(); err != nil {
		t.Fatal(err)
	}
	verify(t, c, committed, "after a discard")
	noMergeFiles(t, dir)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, base)
	emptyUndoRemoved(t, c, base) // the fresh one after the discard
}

// TestLiveMergeCancelledThenRunAgain: the cancelled merge, run again live,
// finishes while the chain is written.
func TestLiveMergeCancelledThenRunAgain(t *testing.T) {
	for _, middle := range []bool{false, true} {
		t.Run(fmt.Sprintf("middle=%v", middle), func(t *testing.T) {
			dir := t.TempDir()
			base, model := newLiveBase(t, dir, 16<<20, 19)
			c := liveChainOf(t, dir, base, model, 3, 19)
			defer c.Close()
			lw := startWriters(c, model, 2, 20)
			layer := ""
			if middle {
				layer = c.Layers()[1].Path
			}
			ctx, progress := cancelAfterFirstPiece()
			if _, err := c.Merge(ctx, layer, progress); !errors.Is(err, context.Canceled) {
				lw.halt(t)
				t.Fatalf("cancelled merge: %v", err)
			}
			_, err := c.Merge(context.Background(), layer, nil)
			lw.halt(t)
			if err != nil {
				t.Fatalf("the merge run again: %v", err)
			}
			verify(t, c, model, "after the merge ran again")
			if c.Depth() != 3 {
				t.Fatalf("depth %d after the merge, want 3", c.Depth())
			}
			noMergeFiles(t, dir)
			paths := layerPaths(c)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			checkClean(t, paths...)
			openVerify(t, paths[0], model, Options{})
		})
	}
}
