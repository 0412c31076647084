package chains

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"vhdkit/engine"
)

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// An undo disk made for one open and left empty is deleted when the
// chain closes; the image is untouched.
func TestEmptyUndoDiskIsRemovedOnClose(t *testing.T) {
	base, model := newLiveBase(t, t.TempDir(), 4<<20, 31)
	before := sum(t, base)
	c, created, err := OpenUndo(base, Options{})
	if err != nil || !created {
		t.Fatalf("open undo: created=%v err=%v", created, err)
	}
	verify(t, c, model, "read through the undo disk")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if exists(t, UndoPath(base)) || !c.UndoRemoved() {
		t.Fatalf("an undo disk that holds nothing is left behind (UndoRemoved %v)", c.UndoRemoved())
	}
	if sum(t, base) != before {
		t.Fatal("the image changed")
	}
	checkClean(t, base)
}

// One write keeps the undo disk; status measures it as a commit does.
func TestUndoDiskWithChangesIsKept(t *testing.T) {
	base, model := newLiveBase(t, t.TempDir(), 4<<20, 32)
	c, _, err := OpenUndo(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeModel(t, c, model, []byte("hello wor"), 1000)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if !exists(t, UndoPath(base)) || c.UndoRemoved() {
		t.Fatal("an undo disk holding a write was removed")
	}
	st, err := Status(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Written != 512 || st.Blocks != 1 || st.Allocated != 1<<20 {
		t.Fatalf("status after a 9-byte write: %+v, want 512 bytes written in 1 block of 1 MiB", st)
	}
	res, err := Commit(context.Background(), base, MergeOptions{})
	if err != nil || res.Copied != st.Written {
		t.Fatalf("commit: %+v %v, want %d bytes copied, as status said", res, err, st.Written)
	}
	openVerify(t, base, model, Options{})
	checkClean(t, base)
}

// An undo disk found at open: empty, with nothing made over it (left by
// a crash before the delete, or an older vhd), it goes at close; one
// holding changes, or with an image made over it, stays.
func TestFoundUndoDisks(t *testing.T) {
	dir := t.TempDir()
	base, model := newLiveBase(t, dir, 4<<20, 33)
	vud := UndoPath(base)
	reopen := func(what string) *Chain {
		t.Helper()
		c, created, err := OpenUndo(base, Options{})
		if err != nil || created {
			t.Fatalf("%s: open undo: created=%v err=%v", what, created, err)
		}
		verify(t, c, model, what)
		c.Close()
		return c
	}
	c, err := CreateChild(base, vud, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c := reopen("found empty"); exists(t, vud) || !c.UndoRemoved() {
		t.Error("an empty undo disk found at open, nothing over it, is left after close")
	}

	c, _, err = OpenUndo(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	orig := append([]byte(nil), model...)
	writeModel(t, c, model, []byte("kept"), 5000)
	c.Close()
	if c := reopen("found holding a write"); !exists(t, vud) || c.UndoRemoved() {
		t.Fatal("an undo disk holding a write was deleted")
	}
	checkClean(t, base, vud)
	if err := Discard(base); err != nil {
		t.Fatal(err)
	}
	copy(model, orig)
	c, err = CreateChild(base, vud, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	kid := filepath.Join(dir, "over-undo.vhd")
	if c, err = CreateChild(vud, kid, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c, _, err := OpenUndo(base, Options{}); err == nil { // refused, or kept
		verify(t, c, model, "found empty under an image")
		c.Close()
	}
	if !exists(t, vud) || !exists(t, kid) {
		t.Fatal("an empty undo disk with an image made over it was deleted")
	}
	checkClean(t, base, vud, kid)
}

// The fresh undo disk a live commit or discard continues on is this
// chain's: left empty, it goes at close. A live commit reports what
// Status measured.
func TestLiveUndoLeavesNoEmptyUndoDisk(t *testing.T) {
	base, model := newLiveBase(t, t.TempDir(), 4<<20, 34)
	for _, verb := range []string{"commit", "discard"} {
		c, created, err := OpenUndo(base, Options{})
		if err != nil || !created {
			t.Fatalf("%s: open undo: created=%v err=%v", verb, created, err)
		}
		want := append([]byte(nil), model...)
		writeModel(t, c, model, []byte("hello wor"), 3<<20+1000)
		if verb == "commit" {
			res, err := c.UndoCommit(context.Background(), nil)
			if err != nil || res.Copied != 512 {
				t.Fatalf("live commit of a 9-byte write: %+v %v, want 512 bytes, as status measures", res, err)
			}
			want = model
		} else if err := c.UndoDiscard(); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if exists(t, UndoPath(base)) || !c.UndoRemoved() {
			t.Fatalf("after a live %s and close, the empty fresh undo disk is left", verb)
		}
		openVerify(t, base, want, Options{})
		copy(model, want)
		checkClean(t, base)
	}
}

// A block allocated in the undo disk whose bitmap is all clear holds
// nothing: status says so.
func TestUndoStatusCountsSectorsNotBlocks(t *testing.T) {
	base, model := newLiveBase(t, t.TempDir(), 4<<20, 35)
	c, _, err := OpenUndo(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeModel(t, c, model, []byte{1}, 0)
	c.Close()
	clearBitmaps(t, UndoPath(base))
	st, err := Status(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Written != 0 || st.Blocks != 0 || st.Allocated != 1<<20 {
		t.Fatalf("status of a block with a clear bitmap: %+v, want nothing written, 1 MiB allocated", st)
	}
	checkClean(t, base, UndoPath(base))
}

func writeModel(t *testing.T, d engine.Disk, model, p []byte, off int64) {
	t.Helper()
	if _, err := d.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	copy(model[off:], p)
}

// clearBitmaps zeroes the sector bitmap and the data of every block of
// the dynamic or differencing image at path (blocks of at most 2 MiB:
// a one-sector bitmap), as a crash after allocating blocks leaves them.
func clearBitmaps(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	hdr := b[engine.FooterSize:]
	table, n, bs := be.Uint64(hdr[16:]), be.Uint32(hdr[28:]), int64(be.Uint32(hdr[32:]))
	for i := range n {
		if e := be.Uint32(b[table+uint64(i)*4:]); e != ^uint32(0) {
			clear(b[int64(e)*512 : int64(e)*512+512+bs])
		}
	}
	if err := os.WriteFile(filepath.Clean(path), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// emptyUndoRemoved checks that closing c deleted image's undo disk,
// which it made and left empty.
func emptyUndoRemoved(t *testing.T, c *Chain, image string) {
	t.Helper()
	if exists(t, UndoPath(image)) || !c.UndoRemoved() {
		t.Errorf("the empty undo disk %s is left after close", UndoPath(image))
	}
}
