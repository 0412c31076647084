package chains

import (
	"errors"
	"strings"
	"testing"
	"time"

	"vhdkit/engine"
)

// TestStaleUndoDiskSaysDiscard: when the image was written under its
// undo disk anyway (another tool, an older vhd), opening the undo disk
// says what happened and offers what is true (discard), never the flag
// that would read its changes over the new data.
func TestStaleUndoDiskSaysDiscard(t *testing.T) {
	dir := t.TempDir()
	base, _ := withUndoDisk(t, dir)
	afterCoarseTick()                               // see linkTimeMatches
	img, err := engine.Open(base, engine.Options{}) // below chains: no guard
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte("written under the undo disk"), 0)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	_, _, err = OpenUndo(base, Options{})
	if !errors.Is(err, ErrParentModified) {
		t.Fatalf("stale undo disk: %v, want ErrParentModified", err)
	}
	wantMention(t, err, "stale undo disk", "undo disk of", "'vhd undo discard")
	if err := Discard(base); err != nil {
		t.Fatalf("discard a stale undo disk: %v", err)
	}
	checkClean(t, base)
}

// TestModifiedParentOfAChildSaysWhenToAccept: for an ordinary child the
// flag is offered only with the condition under which it is right.
func TestModifiedParentOfAChildSaysWhenToAccept(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 2, 4<<20, 23)
	afterCoarseTick()
	img, err := engine.Open(paths[0], engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte("written under its child"), 0)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(paths[1], Options{ReadOnly: true})
	if !errors.Is(err, ErrParentModified) {
		t.Fatalf("child of a written parent: %v, want ErrParentModified", err)
	}
	if !strings.Contains(err.Error(), "only if you know the parent's data did not change") || !strings.Contains(err.Error(), "vhd set-parent --accept-modified-parent "+paths[1]+" "+paths[0]) {
		t.Errorf("the error offers vhd set-parent without saying when it is right: %v", err)
	}
	checkClean(t, paths...)
}

// afterCoarseTick waits past a tick of the kernel's coarse file clock, so
// a parent written next has a file time later than its child's (a write
// within the same tick is the blind spot linkTimeMatches documents).
func afterCoarseTick() { time.Sleep(20 * time.Millisecond) }
