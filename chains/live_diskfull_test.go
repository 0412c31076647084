package chains

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// smallTmpfs mounts a tmpfs of size bytes on a new folder, to be filled.
func smallTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("this machine cannot mount a small tmpfs to fill (root is needed): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillUp fills the file system of dir until about leave bytes are free
// (none: until a write fails) and returns what empties it again.
func fillUp(t *testing.T, dir string, leave int64) (free func()) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for n := int64(st.Bavail)*st.Bsize - leave; n > 0 || leave == 0; n -= int64(len(buf)) {
		buf[0]++ // not all zeros
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	return func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// writeSpan writes random data over [off, off+n) of c and the model.
func writeSpan(t *testing.T, c *Chain, model []byte, off, n int64, seed uint64) {
	t.Helper()
	p := randBytes(randFrom(seed), int(n))
	if _, err := c.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	copy(model[off:], p)
}

// TestLiveDiskFull: on a full file system a live snapshot fails with a
// clear error and leaves nothing behind, and a live merge of the top
// whose target cannot grow stops with ErrMergeInterrupted; either way
// the chain keeps serving every write it acknowledged and takes writes
// where it has room, and once there is room again the merge finishes.
func TestLiveDiskFull(t *testing.T) {
	dir := smallTmpfs(t, 40<<20)
	base, model := newLiveBase(t, dir, 16<<20, 70)
	c, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Snapshot(filepath.Join(dir, "top.vhd")); err != nil {
		t.Fatal(err)
	}
	writeSpan(t, c, model, 0, 12<<20, 71) // the top holds [0, 12 MiB): room for writes there
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	free := fillUp(t, dir, 0)
	full := filepath.Join(dir, "full.vhd")
	err = c.Snapshot(full)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("snapshot on a full disk: %v, want ENOSPC", err)
	}
	t.Logf("snapshot on a full disk: %v", err)
	if fileExists(full) || fileExists(full+".creating") || c.Depth() != 2 {
		t.Fatalf("the failed snapshot left its new top behind (depth %d)", c.Depth())
	}
	writeSpan(t, c, model, 1<<20, 1<<20, 72)
	verify(t, c, model, "after the snapshot failed")
	free()

	free = fillUp(t, dir, 2<<20)
	_, err = c.Merge(context.Background(), "", nil)
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrMergeInterrupted) {
		t.Fatalf("merge on a full disk: %v, want ENOSPC and ErrMergeInterrupted", err)
	}
	t.Logf("merge on a full disk: %v", err)
	if j, err := readJournal(filepath.Join(dir, "top.vhd")); err != nil || j.Copied {
		t.Fatalf("journal after the failed merge: %+v, %v", j, err)
	}
	writeSpan(t, c, model, 3<<20, 1<<20, 73)
	verify(t, c, model, "after the merge failed")
	free()

	if _, err := c.Merge(context.Background(), "", nil); err != nil {
		t.Fatalf("the merge run again with room: %v", err)
	}
	writeSpan(t, c, model, 14<<20, 1<<20, 74)
	verify(t, c, model, "after the merge")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	noMergeFiles(t, dir)
	checkClean(t, base)
	openVerify(t, base, model, Options{})
}

// TestLiveUndoCommitDiskFull: an undo commit whose copy fits but whose
// fresh undo disk finds the disk full stops with the old undo disk still
// serving, and finishes once there is room.
func TestLiveUndoCommitDiskFull(t *testing.T) {
	dir := smallTmpfs(t, 48<<20)
	base, model := newLiveBase(t, dir, 16<<20, 75)
	c, _, err := OpenUndo(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	writeSpan(t, c, model, 0, 16<<20, 76) // the image will hold every block: the copy needs no room
	if _, err := c.UndoCommit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	writeSpan(t, c, model, 2<<20, 4<<20, 77)
	var free func()
	fill := func(done, total int64) {
		if done == total && free == nil {
			free = fillUp(t, dir, 0)
		}
	}
	_, err = c.UndoCommit(context.Background(), fill)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("undo commit on a full disk: %v, want ENOSPC", err)
	}
	t.Logf("undo commit on a full disk: %v", err)
	if top := c.Layers()[0].Path; top != UndoPath(base) {
		t.Fatalf("after the failed commit the chain is served from %s", top)
	}
	writeSpan(t, c, model, 3<<20, 1<<20, 78) // where the undo disk has room
	verify(t, c, model, "after the commit failed")
	free()
	if _, err := c.UndoCommit(context.Background(), nil); err != nil {
		t.Fatalf("the commit run again with room: %v", err)
	}
	committed := append([]byte(nil), model...)
	writeSpan(t, c, model, 9<<20, 1<<20, 79)
	if err := c.UndoDiscard(); err != nil {
		t.Fatal(err)
	}
	verify(t, c, committed, "after a discard")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	noMergeFiles(t, dir)
	checkClean(t, base)
	emptyUndoRemoved(t, c, base) // the fresh one after the discard
}
