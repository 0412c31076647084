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
