package chains

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"vhdkit/engine"
)

// benchChain builds a chain of the given depth over a base full of data.
// Layout "base": the upper layers are empty, so a naive read passes every
// layer. "blocks": layer i rewrites whole blocks i, i+depth, ... with the
// same data, so reads come from every layer. "sectors": each layer holds
// one sector in every block, so reads are cut into many small pieces.
func benchChain(b *testing.B, depth int, size int64, layout string) *Chain {
	b.Helper()
	dir := b.TempDir()
	base := filepath.Join(dir, "l0.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		for i := range buf {
			buf[i] = byte(rng.Uint32() | 1)
		}
		img.WriteAt(buf, off)
	}
	img.Close()
	prev := base
	for i := 1; i < depth; i++ {
		next := filepath.Join(dir, fmt.Sprintf("l%d.vhd", i))
		c, err := CreateChild(prev, next, CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		switch layout {
		case "blocks":
			blk := make([]byte, 2<<20)
			for off := int64(i) * 2 << 20; off < size; off += int64(depth) * 2 << 20 {
				c.ReadAt(blk, off)
				c.WriteAt(blk, off)
			}
		case "sectors":
			for off := int64(i) * 4096; off < size; off += 2 << 20 {
				c.ReadAt(buf[:512], off)
				c.WriteAt(buf[:512], off)
			}
		}
		c.Close()
		prev = next
	}
	c, err := Open(prev, Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkChainRead reads 128 MiB at 64 KiB through chains of depth 1
// and 64 holding the same data. The target: the 64-deep chain at least
// 0.8x the 1-deep one. (At depth 1 every layout is the base alone.)
func BenchmarkChainRead(b *testing.B) {
	const size = 128 << 20
	for _, layout := range []string{"base", "blocks", "sectors"} {
		for _, depth := range []int{1, 64} {
			b.Run(fmt.Sprintf("layout=%s/depth=%d", layout, depth), func(b *testing.B) {
				c := benchChain(b, depth, size, layout)
				defer c.Close()
				buf := make([]byte, 64<<10)
				b.SetBytes(size)
				b.ResetTimer()
				for range b.N {
					for off := int64(0); off < size; off += int64(len(buf)) {
						if _, err := c.ReadAt(buf, off); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}
