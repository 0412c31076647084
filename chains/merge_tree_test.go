package chains

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
)

// tree is a set of images with their parents and, for each, the bytes it
// reads as (its view).
type tree struct {
	dir    string
	parent map[string]string // name -> parent name ("" for the base)
	view   map[string][]byte
}

func (tr *tree) path(name string) string { return filepath.Join(tr.dir, name+".vhd") }

// buildTree makes the images of spec ({name, parent} pairs, parents
// first; the first is the base) with random data in each.
func buildTree(t *testing.T, dir string, size int64, seed uint64, spec ...[2]string) *tree {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 5))
	tr := &tree{dir: dir, parent: map[string]string{}, view: map[string][]byte{}}
	for _, s := range spec {
		tr.add(t, s[0], s[1], size, func(c *Chain, model []byte) { randomOps(t, rng, c, model, 25) })
	}
	return tr
}

// add creates the image name over parent ("": a dynamic base of size),
// writes it with fill, and records its view.
func (tr *tree) add(t *testing.T, name, parent string, size int64, fill func(c *Chain, model []byte)) {
	t.Helper()
	var c *Chain
	model := make([]byte, size)
	if parent == "" {
		img, err := engine.Create(tr.path(name), engine.CreateOptions{Type: engine.TypeDynamic, Size: size, BlockSize: 512 << 10})
		if err != nil {
			t.Fatal(err)
		}
		c = &Chain{layers: []Layer{{Image: img, Path: tr.path(name)}}}
		c.wire()
	} else {
		var err error
		if c, err = CreateChild(tr.path(parent), tr.path(name), CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		copy(model, tr.view[parent])
	}
	fill(c, model)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	tr.parent[name], tr.view[name] = parent, model
}

// verifyViews opens each named image and compares it with its view, then
// checks every image file left in the folder.
func (tr *tree) verifyViews(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		openVerify(t, tr.path(n), tr.view[n], Options{})
	}
	left, _ := filepath.Glob(filepath.Join(tr.dir, "*.vhd"))
	checkClean(t, left...)
}

func (tr *tree) gone(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := os.Stat(tr.path(n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after the merge (%v)", n, err)
		}
	}
}

// TestMergeMiddleLayerMovesItsChildren: base <- l1 <- {l2 <- l3, l2b}.
// Merging l1 into base deletes l1 and moves l2 and l2b onto base, where
// each reads as before (and l3, over l2, too). Before the fix l1 was
// deleted and l2, l2b and l3 no longer opened.
func TestMergeMiddleLayerMovesItsChildren(t *testing.T) {
	tr := buildTree(t, t.TempDir(), 3<<20, 1, [2]string{"base", ""}, [2]string{"l1", "base"}, [2]string{"l2", "l1"}, [2]string{"l3", "l2"}, [2]string{"l2b", "l1"})
	// l2 has a child: a snapshot would have frozen it.
	if err := os.Chmod(tr.path("l2"), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := Merge(context.Background(), tr.path("l1"), MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	tr.gone(t, "l1")
	tr.view["base"] = tr.view["l1"]
	tr.verifyViews(t, "base", "l2", "l3", "l2b")
	if st, _ := os.Stat(tr.path("l2")); st.Mode().Perm() != 0o444 {
		t.Errorf("l2's mode is %v after the merge, want it frozen as before", st.Mode())
	}
}

// TestMergeRefusesWhenAMiddleLayerHasOtherChildren: base <- l1 <- {l2,
// l2b}. Merging l2 into base would delete l1, which l2b needs, and l2b
// cannot move onto base (it would see l2's data): refused, --force or
// not, naming l2b, with nothing changed. Before the fix the merge deleted
// l1 and reported success.
func TestMergeRefusesWhenAMiddleLayerHasOtherChildren(t *testing.T) {
	tr := buildTree(t, t.TempDir(), 2<<20, 2, [2]string{"base", ""}, [2]string{"l1", "base"}, [2]string{"l2", "l1"}, [2]string{"l2b", "l1"})
	for _, force := range []bool{false, true} {
		_, err := Merge(context.Background(), tr.path("l2"), MergeOptions{Into: tr.path("base"), Force: force})
		if !errors.Is(err, ErrHasChildren) {
			t.Fatalf("force=%v: merge: %v, want ErrHasChildren", force, err)
		}
		if !strings.Contains(err.Error(), tr.path("l2b")) || strings.Contains(err.Error(), "--force") {
			t.Errorf("force=%v: the error should name l2b and not offer --force: %v", force, err)
		}
	}
	if _, err := os.Stat(journalPath(tr.path("l2"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused merge left a journal: %v", err)
	}
	tr.verifyViews(t, "base", "l1", "l2", "l2b")
}

// TestMergeRefusesUndoDiskOfAMergedLayer: an undo disk holds writes meant
// for its disk; moving it onto the target would make them writes to the
// target. Refused, naming the undo commands.
func TestMergeRefusesUndoDiskOfAMergedLayer(t *testing.T) {
	tr := buildTree(t, t.TempDir(), 2<<20, 3, [2]string{"base", ""}, [2]string{"l1", "base"})
	c, _, err := OpenUndo(tr.path("l1"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt([]byte{1}, 0); err != nil { // kept: it holds a write
		t.Fatal(err)
	}
	c.Close()
	_, err = Merge(context.Background(), tr.path("l1"), MergeOptions{Force: true})
	if !errors.Is(err, ErrHasChildren) || !strings.Contains(err.Error(), "vhd undo commit|discard") {
		t.Fatalf("merge of a layer with an undo disk: %v", err)
	}
	tr.verifyViews(t, "base", "l1")
	checkClean(t, UndoPath(tr.path("l1")))
}

// TestMergeForceLeavesTargetChildrenInvalid: --force still merges past
// another child of the target (the old meaning), which is left in place
// and refused on open, never deleted.
func TestMergeForceLeavesTargetChildrenInvalid(t *testing.T) {
	tr := buildTree(t, t.TempDir(), 2<<20, 4, [2]string{"base", ""}, [2]string{"l1", "base"}, [2]string{"other", "base"})
	_, err := Merge(context.Background(), tr.path("l1"), MergeOptions{})
	if !errors.Is(err, ErrHasChildren) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("merge with a sibling: %v, want ErrHasChildren offering --force", err)
	}
	if _, err := Merge(context.Background(), tr.path("l1"), MergeOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	tr.view["base"] = tr.view["l1"]
	tr.verifyViews(t, "base")
	if _, err := Open(tr.path("other"), Options{}); !errors.Is(err, ErrParentModified) {
		t.Errorf("sibling after a forced merge: %v, want ErrParentModified", err)
	}
}
