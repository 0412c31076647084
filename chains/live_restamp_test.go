package chains

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// folderState is what a folder's regular files hold at one moment: what
// a process killed at that moment leaves (the kernel keeps what it was
// given, only unflushed state inside the process is lost).
type folderState map[string][]byte

func captureFolder(t *testing.T, dir string) folderState {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := folderState{}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		st[e.Name()] = b
	}
	return st
}

// restore makes the folder hold exactly st again.
func (st folderState) restore(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, ok := st[e.Name()]; !ok {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	for name, b := range st {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLiveSnapshotKilledAfterRestamp: a chain opened and not yet written
// has not stamped its top's footer, so the snapshot's first flush leaves
// the timestamp as it was and the new top records that one. A write and a
// flush before the swap stamp the top anew. A process killed right then
// leaves the new top recording the old timestamp: it must still open
// (the chain served from it, as after any interrupted snapshot), with
// the flushed write.
func TestLiveSnapshotKilledAfterRestamp(t *testing.T) {
	defer func() { liveHook = nil }()
	dir := t.TempDir()
	base, model := newLiveBase(t, dir, 4<<20, 15)
	c, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var killed folderState
	liveHook = func(point string) {
		if point != "snapshot:installed" {
			return
		}
		p := randBytes(rand.New(rand.NewPCG(15, 1)), 64<<10)
		if _, err := c.WriteAt(p, 1<<20); err != nil {
			t.Error(err)
		}
		copy(model[1<<20:], p)
		if err := c.Flush(); err != nil {
			t.Error(err)
		}
		killed = captureFolder(t, dir)
	}
	top := filepath.Join(dir, "top.vhd")
	if err := c.Snapshot(top); err != nil {
		t.Fatal(err)
	}
	liveHook = nil
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	killed.restore(t, dir)
	c, err = Open(top, Options{})
	if err != nil {
		t.Fatalf("the new top left by a snapshot killed before its swap does not open: %v", err)
	}
	verify(t, c, model, "the chain served from the new top")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, top, base)
}
