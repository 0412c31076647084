package chains

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"vhdkit/engine"
)

// blockPath puts a non-empty folder at path, so nothing can create,
// replace or remove a file there until unblock.
func blockPath(t *testing.T, path string) (unblock func()) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.RemoveAll(path); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLiveUndoCommitWithoutAFreshUndoDisk: an undo commit whose fresh undo
// disk cannot be made (a full disk; here its temporary name is taken)
// must fail while the old undo disk still serves: writes keep landing in
// the undo disk, never in the image, and the commit run again finishes.
func TestLiveUndoCommitWithoutAFreshUndoDisk(t *testing.T) {
	dir := t.TempDir()
	base, model := newLiveBase(t, dir, 16<<20, 24)
	c, _, err := OpenUndo(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	vud := UndoPath(base)
	randomOps(t, randFrom(24), c, model, 30)
	unblock := blockPath(t, vud+".creating")
	if _, err := c.UndoCommit(context.Background(), nil); err == nil {
		t.Fatal("the undo commit succeeded without a fresh undo disk")
	}
	if top := c.Layers()[0].Path; top != vud {
		t.Fatalf("after the failed commit the chain is served from %s, not its undo disk %s", top, vud)
	}
	randomOps(t, randFrom(25), c, model, 30)
	verify(t, c, model, "after the failed commit")
	unblock()
	if _, err := c.UndoCommit(context.Background(), nil); err != nil {
		t.Fatalf("the commit run again: %v", err)
	}
	committed := append([]byte(nil), model...)
	randomOps(t, randFrom(26), c, model, 10)
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

// TestLiveUndoCommitFailsAfterItsSwap: an undo commit that fails after
// its swap (the merge's mark cannot be removed) leaves the chain on the
// image itself: it must refuse writes there (they would not be undoable)
// and refuse undo commands with an error, not a crash, and `vhd merge`
// of the undo disk then opening the image with its undo disk must
// recover the data.
func TestLiveUndoCommitFailsAfterItsSwap(t *testing.T) {
	defer func() { liveHook = nil }()
	dir := t.TempDir()
	base, model := newLiveBase(t, dir, 16<<20, 27)
	c, _, err := OpenUndo(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	randomOps(t, randFrom(27), c, model, 30)
	var unblock func()
	liveHook = func(p string) {
		if p == "undo:removed" {
			os.Remove(markPath(base))
			unblock = blockPath(t, markPath(base))
		}
	}
	if _, err := c.UndoCommit(context.Background(), nil); err == nil {
		t.Fatal("the undo commit succeeded without removing its mark")
	}
	liveHook = nil
	verify(t, c, model, "after the commit failed")
	if _, err := c.WriteAt(make([]byte, 4096), 0); !errors.Is(err, engine.ErrReadOnly) {
		t.Errorf("a write after the commit failed past its swap: %v, want it refused (ErrReadOnly)", err)
	}
	if err := c.UndoDiscard(); err == nil {
		t.Error("a discard with no undo disk in use succeeded")
	}
	if _, err := c.UndoCommit(context.Background(), nil); err == nil {
		t.Error("a commit with no undo disk in use succeeded")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	unblock()
	if _, err := Merge(context.Background(), UndoPath(base), MergeOptions{}); err != nil {
		t.Fatalf("vhd merge of the undo disk: %v", err)
	}
	c, _, err = OpenUndo(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	verify(t, c, model, "reopened with its undo disk")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	noMergeFiles(t, dir)
	checkClean(t, base)
	emptyUndoRemoved(t, c, base) // made by the reopen, only read
}
