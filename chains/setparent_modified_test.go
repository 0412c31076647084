package chains

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
)

// writeUnder writes into path below chains (no guard), as a merge into
// it or another tool would: its footer time moves on.
func writeUnder(t *testing.T, path string) {
	t.Helper()
	afterCoarseTick() // see linkTimeMatches
	img, err := engine.Open(path, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte("written after the child was made"), 0)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSetParentRefusesAModifiedParent: the reviewer's case. A parent
// written after its child was made, then moved: set-parent used to link
// the child to it silently (recording its new time), and the child then
// read its changes over different data. Now it is refused as Open
// refuses it, naming the times and --accept-modified-parent, which links
// it when the user says its data did not change.
func TestSetParentRefusesAModifiedParent(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 2, 4<<20, 31)
	writeUnder(t, paths[0])
	moved := filepath.Join(dir, "moved.vhd")
	if err := os.Rename(paths[0], moved); err != nil {
		t.Fatal(err)
	}
	err := SetParent(paths[1], moved, SetParentOptions{})
	if !errors.Is(err, ErrParentModified) {
		t.Fatalf("set-parent onto a modified parent: %v, want ErrParentModified", err)
	}
	wantMention(t, err, "set-parent refusal", "recorded parent time", "footer says", "only if you know the parent's data did not change",
		"vhd set-parent --accept-modified-parent "+paths[1]+" "+moved)
	if _, err := Open(paths[1], Options{ReadOnly: true}); !errors.Is(err, ErrParentNotFound) {
		t.Fatalf("the refused set-parent changed the child: open says %v, want ErrParentNotFound", err)
	}
	if err := SetParent(paths[1], moved, SetParentOptions{AcceptModified: true}); err != nil {
		t.Fatalf("set-parent --accept-modified-parent: %v", err)
	}
	c, err := Open(paths[1], Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open after an accepted set-parent: %v", err)
	}
	c.Close()
	checkClean(t, paths[1], moved)
}

// TestModifiedParentErrorNamesTheFlag: the refusal of a modified parent
// used to tell users to run plain 'vhd set-parent CHILD PARENT' to
// accept it, which set-parent now refuses.
func TestModifiedParentErrorNamesTheFlag(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 2, 4<<20, 32)
	writeUnder(t, paths[0])
	_, err := Open(paths[1], Options{ReadOnly: true})
	if !errors.Is(err, ErrParentModified) {
		t.Fatalf("child of a written parent: %v, want ErrParentModified", err)
	}
	wantMention(t, err, "modified parent", "vhd set-parent --accept-modified-parent "+paths[1]+" "+paths[0])
	checkClean(t, paths...)
}

// TestSetParentOwnParent: naming the child as its own parent used to say
// the image was in use (it was opened twice); it says what is wrong.
func TestSetParentOwnParent(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 2, 4<<20, 33)
	link := filepath.Join(dir, "same.vhd")
	if err := os.Link(paths[1], link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{paths[1], link} {
		err := SetParent(paths[1], p, SetParentOptions{})
		if err == nil || !strings.Contains(err.Error(), "an image cannot be its own parent") {
			t.Errorf("set-parent %s onto %s: %v, want 'an image cannot be its own parent'", paths[1], p, err)
		}
	}
	checkClean(t, paths...)
}

// TestMovedParentAdviceSaysModified: when the parent is not found where
// the child names it but an image with its UUID is, the advice (open's
// error and the tree) offers a plain set-parent only when that image has
// the time the child recorded; otherwise it says it was written after
// the child was made, with both times, and offers only the explicit flag.
func TestMovedParentAdviceSaysModified(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 2, 4<<20, 34)
	moved := filepath.Join(dir, "moved.vhd")
	if err := os.Rename(paths[0], moved); err != nil {
		t.Fatal(err)
	}
	var nf *ParentNotFoundError
	if _, err := Open(paths[1], Options{ReadOnly: true}); !errors.As(err, &nf) || nf.FoundModified != "" {
		t.Fatalf("moved, unchanged parent: %v, want ParentNotFoundError with Found and no FoundModified", err)
	}
	if !strings.Contains(nf.Advice(), moved+" has that UUID: re-link the child with vhd set-parent "+paths[1]+" "+moved) {
		t.Errorf("advice for an unchanged moved parent: %s", nf.Advice())
	}
	writeUnder(t, moved)
	_, err := Open(paths[1], Options{ReadOnly: true})
	if !errors.As(err, &nf) {
		t.Fatalf("moved, modified parent: %v, want ParentNotFoundError", err)
	}
	wantMention(t, err, "open's advice", moved+" has that UUID but was written after the child was made (parent time ", ", the child recorded ",
		"only if you know its data did not change, re-link the child with 'vhd set-parent --accept-modified-parent "+paths[1]+" "+moved+"'")
	if strings.Contains(err.Error(), "vhd set-parent "+paths[1]) {
		t.Errorf("open's advice offers a plain set-parent for a modified parent: %v", err)
	}
	roots, err := Scan([]string{dir}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var child *Node
	for _, r := range roots {
		if r.Path == absPath(paths[1]) {
			child = r
		}
	}
	if child == nil || child.Found != absPath(moved) || !strings.HasPrefix(child.FoundModified, "was written after the child was made (parent time ") {
		t.Fatalf("scan: the child's node %+v, want Found %s with FoundModified", child, moved)
	}
	checkClean(t, paths[1], moved)
}
