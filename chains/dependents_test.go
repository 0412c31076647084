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

// copyImage copies the file at from to to, as cp does: same UUID.
func copyImage(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func uuidOf(t *testing.T, path string) engine.UUID {
	t.Helper()
	img, err := engine.Open(path, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	return img.Footer().UUID
}

// TestDependentsFollowTheLink: a copy of a parent shares its UUID, but
// the child made over the original does not depend on the copy. It used
// to be found by UUID alone, so resizing (merging into, writing,
// replacing) the copy was refused naming a child that never reads it.
// A child whose link cannot be followed still counts, saying so.
func TestDependentsFollowTheLink(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 2, 4<<20, 41)
	orig, child := paths[0], paths[1]
	cp := filepath.Join(dir, "copy.vhd")
	copyImage(t, orig, cp)
	id := uuidOf(t, orig)
	if deps, err := Dependents(id, cp, nil, nil); err != nil || len(deps) != 0 {
		t.Fatalf("dependents of the copy: %v %v, want none (the child's link leads to %s)", deps, err, orig)
	}
	if deps, err := Dependents(id, orig, nil, nil); err != nil || len(deps) != 1 || deps[0] != (Dependent{Path: child}) {
		t.Fatalf("dependents of the original: %v %v, want %s", deps, err, child)
	}
	if err := Resize(cp, 8<<20, ResizeOptions{}); err != nil {
		t.Fatalf("resize the copy: %v", err)
	}
	if err := Resize(orig, 8<<20, ResizeOptions{}); !errors.Is(err, ErrHasChildren) {
		t.Fatalf("resize the original: %v, want ErrHasChildren", err)
	}
	c, err := Open(cp, Options{})
	if err != nil {
		t.Fatalf("open the copy for writing: %v", err)
	}
	c.Close()
	if err := RefuseReplace(cp, nil); err != nil {
		t.Fatalf("replace the copy: %v", err)
	}
	openVerify(t, child, model, Options{})

	// The original gone elsewhere: the child's link leads nowhere, so it
	// may be the copy's child, moved: counted, and the refusal says why.
	if err := os.Rename(orig, filepath.Join(t.TempDir(), "away.vhd")); err != nil {
		t.Fatal(err)
	}
	deps, err := Dependents(id, cp, nil, nil)
	if err != nil || len(deps) != 1 || deps[0].Path != child || deps[0].Unresolved != ErrParentNotFound.Error() {
		t.Fatalf("dependents of the copy, the child's parent gone: %+v %v, want %s unresolved", deps, err, child)
	}
	err = RefuseReplace(cp, nil)
	if !errors.Is(err, ErrHasChildren) || !strings.Contains(err.Error(), child+" (it records this image's UUID, but its parent link does not resolve: parent not found)") {
		t.Fatalf("replace the copy, the child's parent gone: %v", err)
	}
	checkClean(t, cp, child)
}

// TestMergeIntoACopyLeavesTheOriginalsChild: merging a child of a copy
// into the copy was refused (without --force) naming the original's
// child, which records the same UUID but reads the original.
func TestMergeIntoACopyLeavesTheOriginalsChild(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 2, 4<<20, 42)
	orig, child := paths[0], paths[1]
	sub := filepath.Join(dir, "copies")
	os.Mkdir(sub, 0o755)
	cp := filepath.Join(sub, "copy.vhd")
	copyImage(t, orig, cp)
	top := filepath.Join(sub, "top.vhd")
	c, err := CreateChild(cp, top, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt([]byte("written over the copy"), 0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// The merge looks in the layers' folders and their subfolders: dir
	// holds the original's child too.
	res, err := Merge(context.Background(), top, MergeOptions{Open: Options{ParentDirs: []string{dir}}})
	if err != nil {
		t.Fatalf("merge into the copy: %v", err)
	}
	if len(res.Relinked) != 0 {
		t.Errorf("the merge moved %v onto the copy", res.Relinked)
	}
	openVerify(t, child, model, Options{})
	checkClean(t, orig, child, cp)
}
