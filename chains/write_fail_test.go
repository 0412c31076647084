package chains

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"vhdkit/engine"
	"vhdkit/engine/crashfile"
)

var errDiskFull = errors.New("disk full (injected)")

// TestChainWriteFailingPartWay: a write through the chain that spans two
// blocks of the top fails in the second (the k-th write to the top's
// file fails, for every k up to where it succeeds): the first block may
// hold the new data by then. A read through the chain must then show
// what the layers hold, sector by sector: the top where it holds data,
// the base elsewhere. Before the fix the read cache kept saying the base
// owned the whole range, so the read returned the old data where the top
// held the new.
func TestChainWriteFailingPartWay(t *testing.T) {
	const size, blk = 4 << 20, 512 << 10
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: size, BlockSize: blk})
	if err != nil {
		t.Fatal(err)
	}
	baseData := randBytes(rand.New(rand.NewPCG(1, 1)), size)
	if _, err := img.WriteAt(baseData, 0); err != nil {
		t.Fatal(err)
	}
	ft := img.Footer()
	img.Close()
	partial := 0
	for k := 1; ; k++ {
		f := crashfile.New()
		top, err := engine.CreateFile(f, "top", engine.CreateOptions{Type: engine.TypeDifferencing, Size: size, BlockSize: blk,
			Parent: &engine.ParentInfo{UUID: ft.UUID, Timestamp: ft.Timestamp, Name: "base.vhd"}})
		if err != nil {
			t.Fatal(err)
		}
		bimg, err := engine.Open(base, engine.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		c := &Chain{layers: []Layer{{Image: top, Path: "top"}, {Image: bimg, Path: base}}}
		c.wire()
		buf := make([]byte, size)
		if _, err := c.ReadAt(buf, 0); err != nil { // fills the read cache
			t.Fatal(err)
		}
		writes := f.Writes()
		f.BeforeWrite = func(n int, off int64, size int) error {
			if n == writes+k {
				return errDiskFull
			}
			return nil
		}
		_, err = c.WriteAt(bytes.Repeat([]byte{0xee}, 2*blk), blk/2)
		if err == nil {
			c.Close()
			if partial == 0 {
				t.Fatal("no failed write left part of its data in the top")
			}
			t.Logf("failed the write at each of its %d writes to the file; %d left part of the data in the top", k-1, partial)
			checkClean(t, base)
			return
		}
		if !errors.Is(err, errDiskFull) {
			t.Fatalf("write %d: %v", k, err)
		}
		want := layersView(t, c)
		if !bytes.Equal(want, baseData) {
			partial++
		}
		if _, err := c.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want) {
			t.Fatalf("write failing at its file write %d: the chain reads differently from its layers (stale read cache)", k)
		}
		c.Close()
		if rep, err := engine.Check(f.Reopen(), engine.CheckOptions{Bitmaps: true}); err != nil || !rep.OK() {
			t.Fatalf("write failing at its file write %d: check of the top: %v %+v", k, err, rep)
		}
	}
}

// layersView is what the chain should read: each sector from the top if
// the top holds it, else from the base, asked of each layer directly.
func layersView(t *testing.T, c *Chain) []byte {
	t.Helper()
	size := c.Size()
	out := make([]byte, size)
	if _, err := c.layers[1].Image.ReadAt(out, 0); err != nil {
		t.Fatal(err)
	}
	ext, err := c.layers[0].Image.Extents(0, size)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ext {
		if e.State != engine.ExtentHole {
			if err := c.layers[0].Image.ReadStored(out[e.Off:e.Off+e.Len], e.Off); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}
