package chains

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"vhdkit/engine"
)

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestUndoDiscardLeavesTheImageByteIdentical(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 1, 4<<20, 5)
	before := sum(t, paths[0])
	c, created, err := OpenUndo(paths[0], Options{})
	if err != nil || !created {
		t.Fatalf("open undo: created=%v err=%v", created, err)
	}
	changed := append([]byte(nil), model...)
	randomOps(t, rand.New(rand.NewPCG(1, 1)), c, changed, 30)
	verify(t, c, changed, "through the undo disk")
	c.Close()
	st, err := Status(paths[0], Options{})
	if err != nil || !st.Exists || st.Written == 0 {
		t.Fatalf("status %+v %v", st, err)
	}
	c, created, err = OpenUndo(paths[0], Options{})
	if err != nil || created {
		t.Fatalf("reopen undo: created=%v err=%v", created, err)
	}
	verify(t, c, changed, "undo disk reopened")
	c.Close()
	if sum(t, paths[0]) != before {
		t.Fatal("the base image changed while an undo disk took the writes")
	}
	if err := Discard(paths[0]); err != nil {
		t.Fatal(err)
	}
	if sum(t, paths[0]) != before {
		t.Fatal("discard changed the base image")
	}
	if _, err := os.Stat(UndoPath(paths[0])); !errors.Is(err, os.ErrNotExist) {
		t.Error("undo disk still there after discard")
	}
	openVerify(t, paths[0], model, Options{})
}

func TestUndoCommit(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 2, 4<<20, 6)
	c, _, err := OpenUndo(paths[1], Options{})
	if err != nil {
		t.Fatal(err)
	}
	randomOps(t, rand.New(rand.NewPCG(2, 2)), c, model, 30)
	c.Close()
	if _, err := Commit(context.Background(), paths[1], MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(UndoPath(paths[1])); !errors.Is(err, os.ErrNotExist) {
		t.Error("undo disk still there after commit")
	}
	openVerify(t, paths[1], model, Options{})
	checkClean(t, paths...)
}

func TestSetParentAfterMove(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 3, 4<<20, 7)
	moved := filepath.Join(dir, "elsewhere")
	os.Mkdir(moved, 0o755)
	newMid := filepath.Join(moved, "mid.vhd")
	if err := os.Rename(paths[1], newMid); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(paths[2], Options{}); !errors.Is(err, ErrParentNotFound) {
		t.Fatalf("open after the parent moved: %v, want ErrParentNotFound", err)
	}
	// mid's own parent is found by its absolute locators still.
	if err := SetParent(paths[2], newMid, SetParentOptions{}); err != nil {
		t.Fatal(err)
	}
	openVerify(t, paths[2], model, Options{})
	other, err := engine.Create(filepath.Join(dir, "other.vhd"), engine.CreateOptions{Type: engine.TypeDynamic, Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	if err := SetParent(paths[2], filepath.Join(dir, "other.vhd"), SetParentOptions{}); !errors.Is(err, ErrParentMismatch) {
		t.Errorf("set-parent to an unrelated image: %v, want ErrParentMismatch", err)
	}
	checkClean(t, paths[2], newMid)
}

func TestCompact(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vhd")
	const size = 16 << 20
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: size, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(8, 8))
	model := randBytes(rng, size)
	img.WriteAt(model, 0)
	// Zeros written with ZeroKeepAllocated stay allocated: compaction's job.
	img.Zero(2<<20, 4<<20, engine.ZeroKeepAllocated)
	clear(model[2<<20 : 6<<20])
	img.Close()
	child := filepath.Join(dir, "child.vhd")
	c, err := CreateChild(base, child, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The child's zeros over the parent's data must survive compaction;
	// its zeros over the parent's zeros need not.
	c.Zero(8<<20, 1<<20, engine.ZeroKeepAllocated)
	clear(model[8<<20 : 9<<20])
	c.Zero(3<<20, 1<<20, engine.ZeroKeepAllocated)
	c.Close()
	uuid := func(p string) engine.UUID {
		i, _ := engine.Open(p, engine.Options{ReadOnly: true})
		defer i.Close()
		return i.Footer().UUID
	}
	id := uuid(base)
	res, err := Compact(context.Background(), base, CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.BlocksFreed != 4 || res.Reclaimed() < 4<<20 {
		t.Errorf("compacting the base: %+v", res)
	}
	if uuid(base) != id {
		t.Error("compaction changed the UUID")
	}
	res, err = Compact(context.Background(), child, CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.BlocksFreed != 1 {
		t.Errorf("compacting the child freed %d blocks, want 1 (the zeros over zeros)", res.BlocksFreed)
	}
	openVerify(t, child, model, Options{})
	checkClean(t, base, child)
}

func TestResizeRefusesWithChildren(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 2, 4<<20, 9)
	if err := Resize(paths[0], 8<<20, ResizeOptions{}); !errors.Is(err, ErrHasChildren) {
		t.Fatalf("resize a parent: %v, want ErrHasChildren", err)
	}
	if err := Resize(paths[1], 8<<20, ResizeOptions{}); err == nil {
		t.Fatal("resized a differencing image")
	}
	os.Remove(paths[1])
	if err := Resize(paths[0], 8<<20, ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	checkClean(t, paths[0])
}

func TestForeignWindowsChain(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"win8.vhd", "win8-child.vhd"} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", "foreign", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	child := filepath.Join(dir, "win8-child.vhd")
	c, err := Open(child, Options{ReadOnly: true, ParentDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Depth() != 2 || c.Layers()[1].Found != "W2ru locator" {
		t.Errorf("depth %d, parent found via %q", c.Depth(), c.Layers()[1].Found)
	}
	buf := make([]byte, 1<<20)
	if _, err := c.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Errorf("read: %v", err)
	}
	c.Close()
	// Move the child away: the parent is lost, set-parent finds it again.
	moved := filepath.Join(dir, "moved")
	os.Mkdir(moved, 0o755)
	newChild := filepath.Join(moved, "win8-child.vhd")
	os.Rename(child, newChild)
	if _, err := Open(newChild, Options{ReadOnly: true}); !errors.Is(err, ErrParentNotFound) {
		t.Fatalf("moved child: %v, want ErrParentNotFound", err)
	}
	if err := SetParent(newChild, filepath.Join(dir, "win8.vhd"), SetParentOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err = Open(newChild, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	checkClean(t, newChild)
}
