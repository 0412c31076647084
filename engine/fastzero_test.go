package engine

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// writeCounter counts the bytes written through a File.
type writeCounter struct {
	File
	n atomic.Int64
}

func (w *writeCounter) WriteAt(p []byte, off int64) (int, error) {
	w.n.Add(int64(len(p)))
	return w.File.WriteAt(p, off)
}

// TestZeroIsFastPredictsZero zeros random ranges (aligned or not, over
// data, holes and block edges) of a dynamic image and checks ZeroIsFast
// said beforehand exactly whether the Zero would write to the file.
func TestZeroIsFastPredictsZero(t *testing.T) {
	const size, bs = 8 << 20, 512 << 10
	p := filepath.Join(t.TempDir(), "d.vhd")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	wc := &writeCounter{File: OSFile(f)}
	img, err := CreateFile(wc, p, CreateOptions{Type: TypeDynamic, Size: size, BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	fast := 0
	for i := range 400 {
		off := rng.Int64N(size)
		n := rng.Int64N(min(size-off, 3*bs) + 1)
		if i%3 == 0 { // whole blocks and sectors too
			off = off / bs * bs
			n = min(n/512*512+bs, size-off)
		}
		if rng.IntN(2) == 0 {
			w := make([]byte, rng.IntN(8192)+1)
			w[0] = 1
			if _, err := img.WriteAt(w, rng.Int64N(size-int64(len(w)))); err != nil {
				t.Fatal(err)
			}
		}
		predicted := img.ZeroIsFast(off, n, ZeroMayDeallocate)
		before := wc.n.Load()
		if err := img.Zero(off, n, ZeroMayDeallocate); err != nil {
			t.Fatal(err)
		}
		if wrote := wc.n.Load() != before; wrote == predicted {
			t.Fatalf("zero %#x+%#x: ZeroIsFast said %v, the zero wrote data: %v", off, n, predicted, wrote)
		}
		if predicted {
			fast++
		}
	}
	t.Logf("%d of 400 zeros were fast", fast)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, p)
}

func TestZeroIsFastFixedAndModes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f.vhd")
	img, err := Create(p, CreateOptions{Type: TypeFixed, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		off, n int64
		mode   ZeroMode
		want   bool
	}{
		{0, 1 << 20, ZeroMayDeallocate, true},
		{512, 4096, ZeroMayDeallocate, true},
		{100, 4096, ZeroMayDeallocate, false}, // a partial sector is written
		{0, 4096, ZeroKeepAllocated, false},
		{1 << 20, 512, ZeroMayDeallocate, false}, // past the end
	} {
		if got := img.ZeroIsFast(tc.off, tc.n, tc.mode); got != tc.want {
			t.Errorf("fixed ZeroIsFast(%d, %d, %v) = %v, want %v", tc.off, tc.n, tc.mode, got, tc.want)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, p)
}
