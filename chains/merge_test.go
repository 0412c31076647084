package chains

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"vhdkit/engine"
)

// buildChain makes base <- l1 <- ... <- l(n-1) with random data in each
// layer and returns the paths (base first) and the model of the top.
func buildChain(t *testing.T, dir string, n int, size int64, seed uint64) ([]string, []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 9))
	model := make([]byte, size)
	base := filepath.Join(dir, "base.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: size, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := &Chain{layers: []Layer{{Image: img, Path: base}}}
	c.wire()
	randomOps(t, rng, c, model, 40)
	c.Close()
	paths := []string{base}
	for i := 1; i < n; i++ {
		next := filepath.Join(dir, "l"+string(rune('0'+i))+".vhd")
		c, err := CreateChild(paths[i-1], next, CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		randomOps(t, rng, c, model, 40)
		c.Close()
		paths = append(paths, next)
	}
	return paths, model
}

func openVerify(t testing.TB, path string, model []byte, opts Options) {
	t.Helper()
	opts.ReadOnly = true // an image with children may not be opened for writing
	c, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	verify(t, c, model, path)
}

func TestMergeIntoParent(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 3, 6<<20, 1)
	res, err := Merge(context.Background(), paths[2], MergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Target != paths[1] || len(res.Removed) != 1 || res.Removed[0] != paths[2] {
		t.Errorf("result %+v", res)
	}
	if _, err := os.Stat(paths[2]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("merged child still exists: %v", err)
	}
	openVerify(t, paths[1], model, Options{})
	checkClean(t, paths[:2]...)
}

func TestMergeIntoAncestor(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 4, 6<<20, 2)
	if _, err := Merge(context.Background(), paths[3], MergeOptions{Into: paths[0]}); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths[1:] {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after merging into the base", p)
		}
	}
	openVerify(t, paths[0], model, Options{})
	checkClean(t, paths[0])
}

func TestMergeRefusesWhenOtherChildrenDepend(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 2, 4<<20, 3)
	other := filepath.Join(dir, "sub", "other.vhd")
	os.Mkdir(filepath.Dir(other), 0o755)
	c, err := CreateChild(paths[0], other, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, err = Merge(context.Background(), paths[1], MergeOptions{})
	if !errors.Is(err, ErrHasChildren) {
		t.Fatalf("merge with a sibling: %v, want ErrHasChildren", err)
	}
	if !strings.Contains(err.Error(), other) {
		t.Errorf("error does not name the sibling: %v", err)
	}
	if _, err := Merge(context.Background(), paths[1], MergeOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	openVerify(t, paths[0], model, Options{ReadOnly: true}) // other still names it: not writable
	if _, err := Open(other, Options{}); !errors.Is(err, ErrParentModified) {
		t.Errorf("sibling after a forced merge: %v, want ErrParentModified", err)
	}
}

func TestMergeInterruptedThenResumed(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 3, 6<<20, 4)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Merge(ctx, paths[2], MergeOptions{Progress: func(done, total int64) {
		if done > total/3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted merge: %v", err)
	}
	if _, err := Open(paths[2], Options{}); !errors.Is(err, ErrMergeInterrupted) {
		t.Fatalf("open during an interrupted merge: %v, want ErrMergeInterrupted", err)
	}
	// The child's view is intact even so.
	c, err := openMidMerge(paths[2], Options{})
	if err != nil {
		t.Fatal(err)
	}
	verify(t, c, model, "child mid-merge")
	c.Close()
	// While another open holds the target (the merge that wrote the
	// journal, still running), a second merge says so, not that the
	// merge stopped and running it again finishes it.
	holder, err := engine.Open(paths[1], engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Merge(context.Background(), paths[2], MergeOptions{})
	holder.Close()
	if !errors.Is(err, engine.ErrLocked) || errors.Is(err, ErrMergeInterrupted) || strings.Contains(err.Error(), "again") {
		t.Errorf("merge while the target is held: %v, want ErrLocked, not a stopped merge to run again", err)
	}
	if _, err := Merge(context.Background(), paths[2], MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	openVerify(t, paths[1], model, Options{})
	checkClean(t, paths[:2]...)
}

func TestMergeUnfreezesTheTarget(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 1, 2<<20, 20)
	top := filepath.Join(dir, "top.vhd")
	c, err := Snapshot(paths[0], top, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if st, _ := os.Stat(paths[0]); st.Mode().Perm()&0o200 != 0 {
		t.Fatalf("snapshot left the parent writable: %v", st.Mode())
	}
	if _, err := Merge(context.Background(), top, MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(paths[0]); st.Mode().Perm()&0o200 == 0 {
		t.Errorf("merged-into image still read-only: %v", st.Mode())
	}
}

// TestWriteJournalFullDisk: a journal that cannot be written (the disk is
// full: here its temporary file is /dev/full) is an error, and nothing
// is left under the journal's name for a merge to trust.
func TestWriteJournalFullDisk(t *testing.T) {
	child := filepath.Join(t.TempDir(), "child.vhd")
	if err := os.Symlink("/dev/full", journalPath(child)+".tmp"); err != nil {
		t.Fatal(err)
	}
	err := writeJournal(child, &mergeJournal{Target: "base.vhd", TargetUUID: "x"})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writeJournal onto a full disk: %v, want ENOSPC", err)
	}
	if _, err := os.Lstat(journalPath(child)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a journal was left after the failed write: %v", err)
	}
}
