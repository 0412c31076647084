package chains

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
)

// withUndoDisk makes a one-image chain and an undo disk over it holding
// one write; it returns the image and what the undo disk shows.
func withUndoDisk(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	paths, model := buildChain(t, dir, 1, 4<<20, 21)
	c, _, err := OpenUndo(paths[0], Options{})
	if err != nil {
		t.Fatal(err)
	}
	changed := append([]byte(nil), model...)
	copy(changed[1<<20:], "pending change")
	if _, err := c.WriteAt(changed[1<<20:1<<20+512], 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return paths[0], changed
}

func wantMention(t *testing.T, err error, what string, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: the error does not say %q: %v", what, w, err)
		}
	}
	// The flag may be offered only on set-parent, as the explicit choice
	// for a parent whose data is known unchanged, never for opening.
	msg := strings.ReplaceAll(err.Error(), "vhd set-parent --accept-modified-parent", "")
	if strings.Contains(msg, "--accept-modified-parent") {
		t.Errorf("%s: the error offers --accept-modified-parent other than on set-parent: %v", what, err)
	}
}

// TestOpenForWritingRefusedWithUndoDisk: writing an image under its undo
// disk would make the undo disk's changes wrong; the writable open is
// refused, naming the undo disk and the commands that resolve it, and
// the image stays byte for byte as it was.
func TestOpenForWritingRefusedWithUndoDisk(t *testing.T) {
	dir := t.TempDir()
	base, changed := withUndoDisk(t, dir)
	before := sum(t, base)
	_, err := Open(base, Options{})
	if !errors.Is(err, ErrHasUndoDisk) {
		t.Fatalf("open for writing under an undo disk: %v, want ErrHasUndoDisk", err)
	}
	wantMention(t, err, "refusal", UndoPath(base), "'vhd undo commit "+base+"'", "'vhd undo discard "+base+"'")
	if sum(t, base) != before {
		t.Fatal("the refused open changed the image")
	}
	c, err := Open(base, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open under an undo disk: %v", err)
	}
	c.Close()
	c, created, err := OpenUndo(base, Options{})
	if err != nil || created {
		t.Fatalf("the undo disk after the refusal: created %v, %v", created, err)
	}
	verify(t, c, changed, "through the undo disk")
	c.Close()
	if err := Discard(base); err != nil {
		t.Fatal(err)
	}
	c, err = Open(base, Options{})
	if err != nil {
		t.Fatalf("open for writing once the undo disk is discarded: %v", err)
	}
	c.Close()
	checkClean(t, base)
}

// TestOpenForWritingRefusedWithChildren: a parent is not opened for
// writing while a differencing child records it (root ignores the
// read-only mode a snapshot leaves, so the mode is no protection);
// compaction, which keeps the view, still runs. With one child, the
// refusal says to open the child, where the newest writes are (a user
// who serves the image a snapshot or backup froze).
func TestOpenForWritingRefusedWithChildren(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 2, 4<<20, 22)
	before := sum(t, paths[0])
	_, err := Open(paths[0], Options{})
	if !errors.Is(err, ErrHasChildren) {
		t.Fatalf("open a parent for writing: %v, want ErrHasChildren", err)
	}
	wantMention(t, err, "refusal", paths[1], "'vhd snapshot'", "the newest writes are in "+paths[1]+": open that")
	if sum(t, paths[0]) != before {
		t.Fatal("the refused open changed the parent")
	}
	if _, err := Compact(context.Background(), paths[0], CompactOptions{}); err != nil {
		t.Fatalf("compact a parent: %v", err)
	}
	openVerify(t, paths[1], model, Options{})
	checkClean(t, paths...)
}

// TestUndoDiskBlocksForcedMergeAndResize: --force overrides children,
// never an undo disk.
func TestUndoDiskBlocksForcedMergeAndResize(t *testing.T) {
	dir := t.TempDir()
	base, _ := withUndoDisk(t, dir)
	top := filepath.Join(dir, "top.vhd")
	c, err := CreateChild(base, top, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.WriteAt([]byte("top"), 0)
	c.Close()
	before := sum(t, base)
	if _, err := Merge(context.Background(), top, MergeOptions{Force: true}); !errors.Is(err, ErrHasUndoDisk) {
		t.Fatalf("forced merge into an image with an undo disk: %v, want ErrHasUndoDisk", err)
	}
	if err := Resize(base, 8<<20, ResizeOptions{Force: true}); !errors.Is(err, ErrHasUndoDisk) {
		t.Fatalf("forced resize of an image with an undo disk: %v, want ErrHasUndoDisk", err)
	}
	if sum(t, base) != before {
		t.Fatal("a refused operation changed the image")
	}
	checkClean(t, base, top, UndoPath(base))
}

// TestSnapshotRefusals: a snapshot of an image with an undo disk, or held
// by a writer, is refused and creates nothing; one held by readers only
// (another child's chain) goes ahead.
func TestSnapshotRefusals(t *testing.T) {
	dir := t.TempDir()
	base, _ := withUndoDisk(t, dir)
	top := filepath.Join(dir, "top.vhd")
	st, _ := os.Stat(base)
	if _, err := Snapshot(base, top, CreateOptions{}); !errors.Is(err, ErrHasUndoDisk) {
		t.Fatalf("snapshot with an undo disk: %v, want ErrHasUndoDisk", err)
	}
	if _, err := os.Stat(top); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused snapshot left %s: %v", top, err)
	}
	if st2, _ := os.Stat(base); st2.Mode() != st.Mode() {
		t.Errorf("a refused snapshot changed the mode: %v -> %v", st.Mode(), st2.Mode())
	}
	if err := Discard(base); err != nil {
		t.Fatal(err)
	}

	w, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Snapshot(base, top, CreateOptions{})
	if !errors.Is(err, engine.ErrLocked) || strings.Contains(err.Error(), "--") {
		t.Fatalf("snapshot of an image open for writing: %v, want ErrLocked naming no flag", err)
	}
	w.Close()
	if _, err := os.Stat(top); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused snapshot left %s: %v", top, err)
	}

	r, err := Open(base, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Snapshot(base, top, CreateOptions{})
	if err != nil {
		t.Fatalf("snapshot of an image others only read: %v", err)
	}
	c.Close()
	r.Close()
	checkClean(t, base, top)
}

// TestDiscardRefusedWhenUndoDiskHasChildren: an undo disk something was
// made over is not deleted from under it.
func TestDiscardRefusedWhenUndoDiskHasChildren(t *testing.T) {
	dir := t.TempDir()
	base, _ := withUndoDisk(t, dir)
	over := filepath.Join(dir, "over-undo.vhd")
	c, err := CreateChild(UndoPath(base), over, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := Discard(base); !errors.Is(err, ErrHasChildren) {
		t.Fatalf("discard an undo disk with a child: %v, want ErrHasChildren", err)
	}
	if _, err := os.Stat(UndoPath(base)); err != nil {
		t.Fatalf("the undo disk is gone: %v", err)
	}
	checkClean(t, base, UndoPath(base), over)
}

// TestUndoDiskOfAnotherImageDoesNotBlock: disk.vhd and disk.avhd share
// the name disk.vud; only the image it records as parent is guarded.
func TestUndoDiskOfAnotherImageDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	base, _ := withUndoDisk(t, dir)
	other := strings.TrimSuffix(base, ".vhd") + ".avhd"
	img, err := engine.Create(other, engine.CreateOptions{Type: engine.TypeDynamic, Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	c, err := Open(other, Options{})
	if err != nil {
		t.Fatalf("open %s, whose name shares %s: %v", other, UndoPath(base), err)
	}
	c.Close()
	checkClean(t, base, other)
}
