package chains

import (
	"context"
	"errors"
	"os"
	"testing"
)

// TestMergeRemovesStaleTempFiles: a process killed while it rewrote an
// unfinished merge's journal or mark leaves NAME.tmp beside it (the
// rename into place never happened). The merge that then runs to its
// end removes them with its own files: nothing of a finished merge stays
// behind.
func TestMergeRemovesStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 3, 6<<20, 11)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Merge(ctx, paths[2], MergeOptions{Progress: func(done, total int64) {
		if done > total/3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted merge: %v", err)
	}
	stale := []string{journalPath(paths[2]) + ".tmp", markPath(paths[1]) + ".tmp"}
	for _, p := range stale {
		if err := os.WriteFile(p, []byte(`{"target":`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Merge(context.Background(), paths[2], MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range stale {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s outlived the merge (%v)", p, err)
		}
	}
	openVerify(t, paths[1], model, Options{})
	checkClean(t, paths[:2]...)
}
