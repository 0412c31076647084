package chains

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"vhdkit/engine"
)

func checkClean(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		rep, err := engine.CheckPath(p, engine.CheckOptions{Bitmaps: true})
		if err != nil {
			t.Fatalf("check %s: %v", p, err)
		}
		for _, pr := range rep.Problems {
			t.Errorf("check %s: %s", p, pr)
		}
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// verify compares the whole disk with the model, and checks that the
// extents call data everything that is not zero.
func verify(t testing.TB, d engine.Disk, model []byte, what string) {
	t.Helper()
	got := make([]byte, len(model))
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatalf("%s: read: %v", what, err)
	}
	if !bytes.Equal(got, model) {
		for i := range got {
			if got[i] != model[i] {
				t.Fatalf("%s: first difference at byte %d (sector %d): got %#x want %#x", what, i, i/512, got[i], model[i])
			}
		}
	}
	ext, err := d.Extents(0, int64(len(model)))
	if err != nil {
		t.Fatalf("%s: extents: %v", what, err)
	}
	for _, e := range ext {
		if e.State == engine.ExtentData {
			continue
		}
		if !isZero(model[e.Off : e.Off+e.Len]) {
			t.Fatalf("%s: extent %+v is not data but the model holds data there", what, e)
		}
	}
}

// randomOps applies random writes, zeros and trims to d and the model.
func randomOps(t testing.TB, rng *rand.Rand, d engine.Disk, model []byte, n int) {
	t.Helper()
	size := int64(len(model))
	for i := 0; i < n; i++ {
		off := rng.Int64N(size)
		l := min(rng.Int64N(300<<10)+1, size-off)
		switch k := rng.IntN(10); {
		case k < 6:
			b := randBytes(rng, int(l))
			if k == 5 {
				clear(b)
			}
			if _, err := d.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], b)
		case k < 9:
			mode := engine.ZeroMayDeallocate
			if k == 8 {
				mode = engine.ZeroKeepAllocated
			}
			if err := d.Zero(off, l, mode); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+l])
		default:
			if rng.IntN(4) == 0 {
				if err := d.Flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

func TestChainReadsThroughLayers(t *testing.T) {
	for _, depth := range []int{1, 2, 5, 64} {
		t.Run(fmt.Sprint(depth), func(t *testing.T) {
			dir := t.TempDir()
			const size = 8<<20 + 512*3
			rng := rand.New(rand.NewPCG(uint64(depth), 1))
			model := make([]byte, size)
			base := filepath.Join(dir, "l0.vhd")
			img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: size, BlockSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			c := &Chain{layers: []Layer{{Image: img, Path: base}}}
			c.wire()
			ops := max(4, 200/depth)
			randomOps(t, rng, c, model, ops)
			paths := []string{base}
			for i := 1; i < depth; i++ {
				c.Close()
				next := filepath.Join(dir, fmt.Sprintf("l%d.vhd", i))
				var blk int64
				if i%3 == 0 {
					blk = 512 << 10 // layers of another block size
				}
				c, err = Snapshot(paths[len(paths)-1], next, CreateOptions{BlockSize: blk})
				if err != nil {
					t.Fatal(err)
				}
				paths = append(paths, next)
				randomOps(t, rng, c, model, ops)
				if i%8 == 0 || i == depth-1 {
					verify(t, c, model, fmt.Sprintf("layer %d", i))
				}
			}
			c.Close()
			c, err = Open(paths[len(paths)-1], Options{})
			if err != nil {
				t.Fatal(err)
			}
			if c.Depth() != depth {
				t.Fatalf("reopened chain has %d layers, want %d", c.Depth(), depth)
			}
			verify(t, c, model, "reopened")
			randomOps(t, rng, c, model, 50)
			verify(t, c, model, "after more writes")
			c.Close()
			checkClean(t, paths...)
		})
	}
}

// TestExtentsOfAHugeEmptyChain: the extent map of a 1 TiB chain comes
// from the layers' maps, not chunk by chunk (a second per TiB, which made
// SEEK_DATA on a mounted disk crawl).
func TestExtentsOfAHugeEmptyChain(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	c, _, err := OpenUndo(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt([]byte{1}, 1<<39); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ext, err := c.Extents(0, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Extents of 1 TiB took %v", d)
	}
	want := []engine.Extent{{Off: 0, Len: 1 << 39, State: engine.ExtentHole}, {Off: 1 << 39, Len: 512, State: engine.ExtentData}, {Off: 1<<39 + 512, Len: 1<<39 - 512, State: engine.ExtentHole}}
	if !slices.Equal(ext, want) {
		t.Fatalf("extents %v, want %v", ext, want)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, base, UndoPath(base))
}
