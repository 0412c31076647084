package chains

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
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
	defer func(orig func(string, engine.Options) (*engine.Image, error)) { openMergeTarget = orig }(openMergeTarget)
	for i := 4; ; i++ {
		k, variant := i/4, i%4 // each sync point, four random crashes
		dir := t.TempDir()
		paths, model := buildChain(t, dir, 3, 4<<20, 30)
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
		_, err := Merge(context.Background(), paths[2], MergeOptions{})
		openMergeTarget = engine.Open
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
		if err := os.WriteFile(paths[1], crashed.Durable(), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := open(paths[2], Options{ReadOnly: true, AcceptModifiedParent: true})
		if err != nil {
			t.Fatalf("sync %d: the child does not open after the crash: %v", k, err)
		}
		verify(t, c, model, "child after a crash mid-merge")
		c.Close()
		if _, err := Merge(context.Background(), paths[2], MergeOptions{}); err != nil {
			t.Fatalf("sync %d: merge again: %v", k, err)
		}
		openVerify(t, paths[1], model, Options{})
		checkClean(t, paths[:2]...)
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
