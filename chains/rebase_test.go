package chains

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"vhdkit/engine"
)

// newBase makes a dynamic image of size bytes at path holding n random
// operations, and returns its contents.
func newBase(t *testing.T, path string, size int64, seed uint64, n int) []byte {
	t.Helper()
	img, err := engine.Create(path, engine.CreateOptions{Type: engine.TypeDynamic, Size: size, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := &Chain{layers: []Layer{{Image: img, Path: path}}}
	c.wire()
	model := make([]byte, size)
	randomOps(t, rand.New(rand.NewPCG(seed, 5)), c, model, n)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return model
}

// parentOf is the path of the parent child's chain opens.
func parentOf(t *testing.T, child string) string {
	t.Helper()
	c, err := Open(child, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.Layers()[1].Path
}

// TestRebaseKeepsView rebases the top of a 3-layer chain onto its
// grandparent and onto an unrelated image: it reads the same, and its
// chain is the new one.
func TestRebaseKeepsView(t *testing.T) {
	for _, onto := range []string{"grandparent", "unrelated"} {
		t.Run(onto, func(t *testing.T) {
			dir := t.TempDir()
			paths, model := buildChain(t, dir, 3, 6<<20, 21)
			target := paths[0]
			if onto == "unrelated" {
				target = filepath.Join(dir, "other.vhd")
				newBase(t, target, 6<<20, 22, 40)
			}
			res, err := Rebase(context.Background(), paths[2], target, RebaseOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Copied == 0 || res.OldParent != paths[1] {
				t.Errorf("result %+v: want data copied from %s", res, paths[1])
			}
			openVerify(t, paths[2], model, Options{})
			if got, _ := filepath.EvalSymlinks(parentOf(t, paths[2])); got != mustEval(t, target) {
				t.Errorf("parent now %s, want %s", got, target)
			}
			checkClean(t, paths...)
			checkClean(t, target)
		})
	}
}

func mustEval(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRebaseCopiesZeros: where the old parent reads zeros (holds
// nothing) and the new one data, the child must get zeros of its own. A
// plain write of zeros there is elided (the old parent holds no data), so
// the new parent's data would show: the copy zeros with
// ZeroKeepAllocated.
func TestRebaseCopiesZeros(t *testing.T) {
	dir := t.TempDir()
	const size = 4 << 20
	empty, full := filepath.Join(dir, "empty.vhd"), filepath.Join(dir, "full.vhd")
	newBase(t, empty, size, 1, 0)
	img, err := engine.Create(full, engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(randBytes(rand.New(rand.NewPCG(3, 3)), size), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "child.vhd")
	c, err := CreateChild(empty, child, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	w := randBytes(rand.New(rand.NewPCG(4, 4)), 8192)
	if _, err := c.WriteAt(w, 1<<20); err != nil {
		t.Fatal(err)
	}
	copy(model[1<<20:], w)
	c.Close()
	if _, err := Rebase(context.Background(), child, full, RebaseOptions{}); err != nil {
		t.Fatal(err)
	}
	openVerify(t, child, model, Options{})
	checkClean(t, child, full)
}

func TestRebaseRefuses(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 3, 4<<20, 31)
	other := filepath.Join(dir, "small.vhd")
	newBase(t, other, 2<<20, 2, 5)
	for _, c := range []struct {
		child, parent string
		want          error
	}{
		{paths[1], paths[0], ErrHasChildren}, // l2 depends on l1
		{paths[2], other, ErrParentMismatch}, // another size
		{paths[2], paths[2], ErrCycle},       // itself
	} {
		_, err := Rebase(context.Background(), c.child, c.parent, RebaseOptions{})
		if !errors.Is(err, c.want) {
			t.Errorf("rebase %s onto %s: %v, want %v", filepath.Base(c.child), filepath.Base(c.parent), err, c.want)
		}
	}
	same := filepath.Join(dir, "same.vhd")
	newBase(t, same, 4<<20, 3, 5)
	if _, err := Rebase(context.Background(), paths[0], same, RebaseOptions{}); err == nil {
		t.Error("rebase of a dynamic image: no error")
	}
	checkClean(t, paths...)
}

// TestRebaseKilled kills a rebase at random moments and right after the
// copy (before the relink): the child reads the same whatever the moment,
// and running the rebase again finishes it.
func TestRebaseKilled(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 1))
	for i := range 7 {
		dir := t.TempDir()
		paths, model := buildChain(t, dir, 3, 32<<20, uint64(50+i))
		newBase(t, filepath.Join(dir, "new.vhd"), 32<<20, uint64(60+i), 60)
		if i == 0 {
			killedAtPoint(t, "rebase-at-copied", paths[2])
		} else {
			runKilled(t, "rebase", paths[2], time.Duration(rng.IntN(80))*time.Millisecond)
		}
		openVerify(t, paths[2], model, Options{})
		repairKilled(t, paths[2])
		openVerify(t, paths[2], model, Options{})
		checkClean(t, paths...)
		if _, err := Rebase(context.Background(), paths[2], filepath.Join(dir, "new.vhd"), RebaseOptions{}); err != nil {
			t.Fatalf("run %d: rebase again: %v", i, err)
		}
		openVerify(t, paths[2], model, Options{})
		checkClean(t, paths[2])
	}
}

// repairKilled checks an image whose writer was killed: only what a
// write that never reached a flush leaves (fixable: data under a clear
// bitmap bit, blocks past the last flushed one) may be found, and repair
// must fix it, as for any killed writer (engine/crash_kill_test.go).
func repairKilled(t *testing.T, path string) {
	t.Helper()
	rep, err := engine.CheckPath(path, engine.CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		return
	}
	for _, p := range rep.Problems {
		if !p.Fixable {
			t.Fatalf("a killed rebase left a problem repair cannot fix: %s", p)
		}
	}
	if _, err := engine.Repair(path, engine.RepairOptions{Bitmaps: true}); err != nil {
		t.Fatalf("repair: %v", err)
	}
	checkClean(t, path)
}

// killedAtPoint runs op in a child process that kills itself at its
// point, and fails unless it died of that SIGKILL.
func killedAtPoint(t *testing.T, op, path string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", path)
	cmd.Env = append(os.Environ(), killEnv+"="+op)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("%s: want death by SIGKILL at its point, got %v: %s", op, err, out)
	}
}

// rebaseKillChild runs the rebase TestRebaseKilled kills: of path onto
// new.vhd beside it; at "rebase-at-copied" it kills itself at that point.
func rebaseKillChild(op, path string) error {
	if op == "rebase-at-copied" {
		liveHook = func(point string) {
			if point == "rebase-copied" {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	_, err := Rebase(context.Background(), path, filepath.Join(filepath.Dir(path), "new.vhd"), RebaseOptions{})
	return err
}
