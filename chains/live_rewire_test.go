package chains

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// TestLiveMergeTargetKeepsItsParent: the layer a live merge writes into
// is reopened for writing; when it is itself a differencing image, the
// reopened image must read through to its own parent. A write that is
// not sector-aligned reads the sector around it from there: after a
// merge of the top into a middle layer (the target is the new top) and
// after a merge of a middle layer (the target is read by the layer above
// where it holds nothing), such writes must land and read back.
func TestLiveMergeTargetKeepsItsParent(t *testing.T) {
	for _, middle := range []bool{false, true} {
		t.Run(fmt.Sprintf("middle=%v", middle), func(t *testing.T) {
			dir := t.TempDir()
			base, model := newLiveBase(t, dir, 8<<20, 14)
			c, err := Open(base, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rng := rand.New(rand.NewPCG(14, 2))
			for i := range 3 {
				if err := c.Snapshot(filepath.Join(dir, fmt.Sprintf("s%d.vhd", i))); err != nil {
					t.Fatal(err)
				}
				randomOps(t, rng, c, model, 5)
			}
			layer := "" // base <- s0 <- s1 <- s2: s2 into s1, or s1 into s0
			if middle {
				layer = c.Layers()[1].Path
			}
			if _, err := c.Merge(context.Background(), layer, nil); err != nil {
				t.Fatal(err)
			}
			for i := range 64 {
				off := int64(i)*(128<<10) + 1000 // unaligned, all over the disk
				p := randBytes(rng, 700)
				if _, err := c.WriteAt(p, off); err != nil {
					t.Fatalf("unaligned write at %d after the merge: %v", off, err)
				}
				copy(model[off:], p)
			}
			verify(t, c, model, "after the merge and unaligned writes")
			paths := layerPaths(c)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			checkClean(t, paths...)
		})
	}
}
