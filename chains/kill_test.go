package chains

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The process-kill tests run a merge or a compaction in a child process
// (this test binary, re-run with killEnv set), kill it with SIGKILL at a
// random moment, and check what is left: the chain reads as before, and
// running the operation again completes it.
const killEnv = "VHDKIT_CHAINS_KILL_CHILD"

func TestMain(m *testing.M) {
	if op := os.Getenv(killEnv); op != "" {
		os.Exit(killChild(op, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// killChild runs one operation on path and exits 0 when it finishes.
func killChild(op, path string) int {
	var err error
	switch op {
	case "merge":
		_, err = Merge(context.Background(), path, MergeOptions{})
	case "compact":
		_, err = Compact(context.Background(), path, CompactOptions{})
	case "rebase", "rebase-at-copied":
		err = rebaseKillChild(op, path)
	case "live", "live-undo":
		return liveKillChild(op, path)
	case "hold-ro":
		return holdReadOnly(path)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// runKilled starts the operation and kills it after delay (or lets it
// finish). It reports whether the child finished on its own.
func runKilled(t *testing.T, op, path string, delay time.Duration) bool {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", path)
	cmd.Env = append(os.Environ(), killEnv+"="+op)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s finished with %v: %s", op, err, stderr.String())
		}
		return true
	case <-time.After(delay):
		cmd.Process.Kill()
		<-done
		return false
	}
}

func TestMergeKilled(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 1))
	for i := range 6 {
		dir := t.TempDir()
		paths, model := buildChain(t, dir, 3, 48<<20, uint64(i))
		finished := runKilled(t, "merge", paths[2], time.Duration(rng.IntN(60))*time.Millisecond)
		_, err := os.Stat(journalPath(paths[2]))
		if !finished && (err == nil || fileExists(paths[2])) {
			// Whatever moment it died at, running it again completes it.
			if _, err := Merge(context.Background(), paths[2], MergeOptions{}); err != nil {
				t.Fatalf("run %d: merge again: %v", i, err)
			}
		}
		openVerify(t, paths[1], model, Options{})
		if _, err := os.Stat(paths[2]); !os.IsNotExist(err) {
			t.Fatalf("run %d: merged child still there", i)
		}
		checkClean(t, paths[:2]...)
	}
}

// TestMergeTreeKilled kills a merge of l1 (32 MiB of data) whose
// children l2 and l2b move onto the base, at random moments: each child
// reads as before whatever the moment, and running the merge again
// finishes it.
func TestMergeTreeKilled(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 1))
	midway := 0
	defer func() { t.Logf("%d of 6 merges were killed half-way", midway) }()
	for i := range 6 {
		tr := &tree{dir: t.TempDir(), parent: map[string]string{}, view: map[string][]byte{}}
		data := rand.New(rand.NewPCG(uint64(i), 2))
		ops := func(c *Chain, model []byte) { randomOps(t, data, c, model, 20) }
		tr.add(t, "base", "", 48<<20, ops)
		tr.add(t, "l1", "base", 48<<20, func(c *Chain, model []byte) {
			b := randBytes(data, 32<<20)
			if _, err := c.WriteAt(b, 8<<20); err != nil {
				t.Fatal(err)
			}
			copy(model[8<<20:], b)
		})
		tr.add(t, "l2", "l1", 48<<20, ops)
		tr.add(t, "l2b", "l1", 48<<20, ops)
		finished := runKilled(t, "merge", tr.path("l1"), time.Duration(rng.IntN(150))*time.Millisecond)
		if !finished && fileExists(journalPath(tr.path("l1"))) {
			midway++
			if _, err := Merge(context.Background(), tr.path("l1"), MergeOptions{}); err != nil {
				t.Fatalf("run %d: merge again: %v", i, err)
			}
		}
		if fileExists(tr.path("l1")) {
			// Killed before the journal: nothing changed; merge now.
			if _, err := Merge(context.Background(), tr.path("l1"), MergeOptions{}); err != nil {
				t.Fatalf("run %d: merge: %v", i, err)
			}
		}
		tr.view["base"] = tr.view["l1"]
		tr.verifyViews(t, "base", "l2", "l2b")
	}
}

func TestCompactKilled(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 1))
	for i := range 6 {
		dir := t.TempDir()
		paths, model := buildChain(t, dir, 2, 48<<20, uint64(10+i))
		runKilled(t, "compact", paths[1], time.Duration(rng.IntN(100))*time.Millisecond)
		// Old image or new, it reads the same.
		openVerify(t, paths[1], model, Options{})
		if _, err := Compact(context.Background(), paths[1], CompactOptions{}); err != nil {
			t.Fatalf("run %d: compact again: %v", i, err)
		}
		openVerify(t, paths[1], model, Options{})
		if left, _ := filepath.Glob(filepath.Join(dir, ".*compacting")); len(left) > 0 {
			t.Errorf("run %d: temporary files left: %v", i, left)
		}
		checkClean(t, paths...)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
