package chains

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"vhdkit/engine"
)

// TestRandomChainOperations drives random sequences of writes, zeros,
// snapshots, merges, compactions, resizes and reopens against a plain
// byte-slice model of the disk, comparing every byte after each
// structural step, and ends with the consistency check of every layer.
func TestRandomChainOperations(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4}
	if testing.Short() {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runModel(t, seed, 64) })
	}
}

func runModel(t *testing.T, seed uint64, maxDepth int) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 77))
	size := int64(4<<20 + 512*rng.Int64N(64))
	model := make([]byte, size)
	base := filepath.Join(dir, "base.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: size, BlockSize: 512 << 10})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	layers := []string{base} // base first
	c, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	reopen := func() {
		t.Helper()
		if c != nil {
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if c, err = Open(layers[len(layers)-1], Options{}); err != nil {
			t.Fatalf("seed %d: reopen: %v", seed, err)
		}
		if c.Depth() != len(layers) {
			t.Fatalf("seed %d: depth %d, want %d", seed, c.Depth(), len(layers))
		}
	}
	for step := 0; step < 300; step++ {
		switch k := rng.IntN(20); {
		case k < 12:
			randomOps(t, rng, c, model, 1)
		case k < 15 && len(layers) < maxDepth:
			c.Close()
			next++
			top := filepath.Join(dir, fmt.Sprintf("l%d.vhd", next))
			if c, err = Snapshot(layers[len(layers)-1], top, CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			layers = append(layers, top)
		case k == 15 && len(layers) > 1:
			c.Close()
			c = nil
			into := ""
			n := 1
			if len(layers) > 2 && rng.IntN(2) == 0 {
				n = 1 + rng.IntN(len(layers)-1)
				into = layers[len(layers)-1-n]
			}
			if _, err := Merge(context.Background(), layers[len(layers)-1], MergeOptions{Into: into}); err != nil {
				t.Fatalf("seed %d step %d: merge: %v", seed, step, err)
			}
			layers = layers[:len(layers)-n]
			reopen()
		case k == 16:
			c.Close()
			c = nil
			if _, err := Compact(context.Background(), layers[len(layers)-1], CompactOptions{}); err != nil {
				t.Fatalf("seed %d step %d: compact: %v", seed, step, err)
			}
			reopen()
		case k == 17 && len(layers) == 1:
			c.Close()
			c = nil
			grow := size + 512*rng.Int64N(4096)
			if err := Resize(base, grow, ResizeOptions{}); err != nil {
				t.Fatal(err)
			}
			model = append(model, make([]byte, grow-size)...)
			size = grow
			reopen()
		default:
			reopen()
		}
		if step%25 == 0 {
			verify(t, c, model, fmt.Sprintf("seed %d step %d depth %d", seed, step, len(layers)))
		}
	}
	verify(t, c, model, "end")
	c.Close()
	checkClean(t, layers...)
}
