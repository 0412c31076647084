package chains

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
	"vhdkit/engine/crashfile"
)

var errPowerLost = errors.New("power lost")

// TestMergePowerLoss runs a merge whose target sits on a crashfile and
// cuts the power at each of the target's syncs in turn (keeping a random
// part of what was not yet synced): the child must still read exactly as
// before, and running the merge again must complete it.
func TestMergePowerLoss(t *testing.T) {
	mergePowerLoss(t, func(dir string) (string, string, []byte, []string) {
		paths, model := buildChain(t, dir, 3, 4<<20, 30)
		return paths[2], paths[1], model, paths[:2]
	})
}

// TestMergeGrowingTargetPowerLoss is TestMergePowerLoss for a child larger
// than its differencing target, whose own parent is larger still: the
// target grows first (growTarget), and no crash may change what the
// child reads.
func TestMergeGrowingTargetPowerLoss(t *testing.T) {
	mergePowerLoss(t, func(dir string) (string, string, []byte, []string) {
		g, p, c := sizedChain(t, dir, 16<<20)
		model := make([]byte, 20<<20)
		copy(model, bytes.Repeat([]byte{7}, 16<<20))
		data := bytes.Repeat([]byte{9}, 2<<20)
		writeThrough(t, c, 17<<20, data)
		copy(model[17<<20:], data)
		return c, p, model, []string{g, p}
	})
}

// mergePowerLoss merges the child build makes into its target, crashing
// the target at each of its syncs (four ways each), as described above.
// build returns the child, the target, what the child reads, and the
// images left once the merge is done.
func mergePowerLoss(t *testing.T, build func(dir string) (child, target string, model []byte, left []string)) {
	defer func(orig func(string, engine.Options) (*engine.Image, error)) { openMergeTarget = orig }(openMergeTarget)
	for i := 4; ; i++ {
		k, variant := i/4, i%4 // each sync point, four random crashes
		dir := t.TempDir()
		child, target, model, left := build(dir)
		rng := rand.New(rand.NewPCG(uint64(k), uint64(variant)))
		var crashed *crashfile.File
		openMergeTarget = func(path string, opts engine.Options) (*engine.Image, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			f := crashfile.FromBytes(b)
			f.BeforeSync = func(n int) error {
				if n == k {
					crashed = f.Crash(rng)
					return errPowerLost
				}
				return nil
			}
			return engine.OpenFile(f, path, opts)
		}
		_, err := Merge(context.Background(), child, MergeOptions{})
		openMergeTarget = openWritable
		if crashed == nil {
			if err != nil {
				t.Fatalf("merge without a crash: %v", err)
			}
			if k < 3 {
				t.Fatalf("the merge target synced only %d times", k-1)
			}
			t.Logf("power cut at each of the target's %d syncs, 4 ways each", k-1)
			return // every sync point has been crashed at
		}
		if !errors.Is(err, errPowerLost) {
			t.Fatalf("sync %d: merge went on after the power was lost: %v", k, err)
		}
		// The medium now holds the crashed target; the child and the
		// journal are as the merge left them.
		if err := os.WriteFile(target, crashed.Durable(), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := openMidMerge(child, Options{})
		if err != nil {
			t.Fatalf("sync %d: the child does not open after the crash: %v", k, err)
		}
		verify(t, c, model, "child after a crash mid-merge")
		c.Close()
		if _, err := Merge(context.Background(), child, MergeOptions{}); err != nil {
			t.Fatalf("sync %d: merge again: %v", k, err)
		}
		openVerify(t, target, model, Options{})
		checkClean(t, left...)
	}
}

// TestCompactPowerLoss cuts the power at each sync of the new image a
// compaction writes: the rename has not happened, so the old image must
// be there, whole, and a new compaction must succeed.
func TestCompactPowerLoss(t *testing.T) {
	defer func(orig func(string, engine.CreateOptions) (*engine.Image, error)) { createCompacted = orig }(createCompacted)
	for k := 1; ; k++ {
		dir := t.TempDir()
		paths, model := buildChain(t, dir, 2, 4<<20, 31)
		before, err := os.ReadFile(paths[1])
		if err != nil {
			t.Fatal(err)
		}
		cut := false
		createCompacted = func(path string, opts engine.CreateOptions) (*engine.Image, error) {
			f := crashfile.New()
			f.BeforeSync = func(n int) error {
				if n == k {
					cut = true
					return errPowerLost
				}
				return nil
			}
			return engine.CreateFile(f, path, opts)
		}
		_, err = Compact(context.Background(), paths[1], CompactOptions{})
		createCompacted = engine.Create
		if !cut {
			// Past the last sync: the in-memory image cannot be renamed
			// into place, which is no part of this test.
			if k < 3 {
				t.Fatalf("the new image synced only %d times", k-1)
			}
			t.Logf("power cut at each of the new image's %d syncs", k-1)
			return
		}
		if !errors.Is(err, errPowerLost) {
			t.Fatalf("sync %d: compaction went on after the power was lost: %v", k, err)
		}
		after, err := os.ReadFile(paths[1])
		if err != nil || string(after) != string(before) {
			t.Fatalf("sync %d: the old image changed (%v)", k, err)
		}
		openVerify(t, paths[1], model, Options{})
		if _, err := Compact(context.Background(), paths[1], CompactOptions{}); err != nil {
			t.Fatalf("sync %d: compact again: %v", k, err)
		}
		openVerify(t, paths[1], model, Options{})
		checkClean(t, paths...)
	}
}

// powerCut runs every file a merge writes (the target and the children
// it moves) on crashfiles sharing one count of syncs, and at the cut'th
// sync loses power on all of them at once: each keeps a random part of
// what it had not synced. Files are keyed by path.
type powerCut struct {
	t       *testing.T
	cut     int
	syncs   int
	rng     *rand.Rand
	files   map[string]*crashfile.File
	crashed map[string][]byte // what the medium holds after the cut
}

func (pc *powerCut) open(path string, opts engine.Options) (*engine.Image, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := crashfile.FromBytes(b)
	f.BeforeSync = func(int) error {
		if pc.crashed != nil {
			return errPowerLost
		}
		if pc.syncs++; pc.syncs == pc.cut {
			pc.crashed = map[string][]byte{}
			for p, f := range pc.files {
				pc.crashed[p] = f.Crash(pc.rng).Durable()
			}
			return errPowerLost
		}
		return nil
	}
	pc.files[path] = f
	return engine.OpenFile(f, path, opts)
}

// land writes what the medium holds after the cut to the real files.
func (pc *powerCut) land() {
	for p, b := range pc.crashed {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			pc.t.Fatal(err)
		}
	}
}

// TestMergeRelinkPowerLoss merges l1, whose children l2, l2b and l2c move
// onto the base, and cuts the power at each sync of the base and the
// children in turn (two random crashes each): every child must still read
// as before, refuse a plain open (the merge is unfinished), and running
// the merge again must finish it with every view intact.
func TestMergeRelinkPowerLoss(t *testing.T) {
	defer func(a, b func(string, engine.Options) (*engine.Image, error)) {
		openMergeTarget, openRelinked = a, b
	}(openMergeTarget, openRelinked)
	kids := []string{"l2", "l2b", "l2c"}
	for i := 2; ; i++ {
		tr := buildTree(t, t.TempDir(), 2<<20, uint64(i), [2]string{"base", ""}, [2]string{"l1", "base"}, [2]string{"l2", "l1"}, [2]string{"l2b", "l1"}, [2]string{"l2c", "l1"})
		pc := &powerCut{t: t, cut: i / 2, rng: rand.New(rand.NewPCG(uint64(i), 3)), files: map[string]*crashfile.File{}}
		openMergeTarget, openRelinked = pc.open, pc.open
		_, err := Merge(context.Background(), tr.path("l1"), MergeOptions{})
		openMergeTarget, openRelinked = openWritable, openWritable
		if pc.crashed == nil {
			if err != nil {
				t.Fatalf("merge without a crash: %v", err)
			}
			if pc.syncs < 8 {
				t.Fatalf("the merge synced only %d times", pc.syncs)
			}
			t.Logf("power cut at each of the merge's %d syncs, 2 ways each", pc.syncs)
			return
		}
		if !errors.Is(err, errPowerLost) || !errors.Is(err, ErrMergeInterrupted) {
			t.Fatalf("sync %d: merge went on after the power was lost, or did not say it is unfinished: %v", pc.cut, err)
		}
		pc.land()
		for _, k := range kids {
			c, err := openMidMerge(tr.path(k), Options{})
			if err != nil {
				t.Fatalf("sync %d: %s does not open after the crash: %v", pc.cut, k, err)
			}
			verify(t, c, tr.view[k], k+" after a crash mid-merge")
			c.Close()
			if _, err := Open(tr.path(k), Options{}); !errors.Is(err, ErrMergeInterrupted) || !strings.Contains(err.Error(), "vhd merge "+tr.path("l1")) {
				t.Fatalf("sync %d: open of %s mid-merge: %v, want ErrMergeInterrupted naming the merge to finish", pc.cut, k, err)
			}
		}
		if _, err := Merge(context.Background(), tr.path("l1"), MergeOptions{}); err != nil {
			t.Fatalf("sync %d: merge again: %v", pc.cut, err)
		}
		tr.gone(t, "l1")
		tr.view["base"] = tr.view["l1"]
		tr.verifyViews(t, append(kids, "base")...)
		if left, _ := filepath.Glob(filepath.Join(tr.dir, "*.merg*")); len(left) > 0 {
			t.Fatalf("sync %d: merge files left: %v", pc.cut, left)
		}
	}
}
