package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"vhdkit/engine/crashfile"
)

// TestBitRuns: bitsIn and runEnd, which skip whole bytes, agree with a
// bit-by-bit walk on random bitmaps and ranges.
func TestBitRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		bits := make([]byte, 1+rng.IntN(40))
		for i := range bits {
			switch rng.IntN(3) {
			case 0:
				bits[i] = 0xff
			case 1:
				bits[i] = byte(rng.Uint32())
			}
		}
		n := int64(len(bits) * 8)
		from := rng.Int64N(n)
		to := from + 1 + rng.Int64N(n-from)
		on := bitSet(bits, from)
		want := from
		for want < to && bitSet(bits, want) == on {
			want++
		}
		if got := runEnd(bits, from, to, on); got != want {
			t.Fatalf("runEnd(% x, %d, %d, %v) = %d, want %d", bits, from, to, on, got, want)
		}
		var set, clr bool
		for i := from; i < to; i++ {
			set = set || bitSet(bits, i)
			clr = clr || !bitSet(bits, i)
		}
		if s, c := bitsIn(bits, from, to); s != set || c != clr {
			t.Fatalf("bitsIn(% x, %d, %d) = %v, %v, want %v, %v", bits, from, to, s, c, set, clr)
		}
	}
}

// TestReadsFollowBitmaps: a differencing child over a parent full of
// data is written, trimmed in part (bits cleared, the parent shows
// again) and in whole blocks, and read back after every step, through
// ReadAt and ReadStored. Reads of blocks that are not full go by the
// lock-free summary where it can tell, so it must follow every change of
// the bits: a summary left saying "present" after a trim would show
// zeros where the parent's data belongs. The bitmap cache is tiny and
// recent has fewer slots than there are blocks, so bitmaps are evicted,
// reloaded and pushed out of recent all the time.
func TestReadsFollowBitmaps(t *testing.T) {
	for _, bs := range []int64{4096, 64 << 10, 2 << 20} {
		t.Run(fmt.Sprintf("block%dk", bs>>10), func(t *testing.T) {
			defer func(c int64, r int) { maxCachedBitmapBytes, maxRecentBitmaps = c, r }(maxCachedBitmapBytes, maxRecentBitmaps)
			maxCachedBitmapBytes, maxRecentBitmaps = 4*SectorSize, 64
			readsFollowBitmaps(t, bs)
		})
	}
}

func readsFollowBitmaps(t *testing.T, bs int64) {
	size := min(256*bs, 16<<20) + 3*SectorSize // a short last block
	rng := rand.New(rand.NewPCG(uint64(bs), 5))
	parentData := randBytes(rng, int(size))
	parent, err := CreateFile(crashfile.New(), "parent", CreateOptions{Type: TypeFixed, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parent.WriteAt(parentData, 0); err != nil {
		t.Fatal(err)
	}
	pf := parent.Footer()
	cf := crashfile.New()
	child, err := CreateFile(cf, "child", CreateOptions{Type: TypeDifferencing, Size: size, BlockSize: bs,
		Parent: &ParentInfo{UUID: pf.UUID, Timestamp: pf.Timestamp, Name: "parent.vhd"}})
	if err != nil {
		t.Fatal(err)
	}
	child.SetParent(parent)
	model := bytes.Clone(parentData)
	owned := make([]bool, size/SectorSize) // sectors the child holds
	sectors := size / SectorSize
	// A block trimmed whole is deallocated, and the next write into it
	// allocates a new one at the file's end: the in-memory file grows by
	// a block each time (a real file would hold holes). The budget keeps
	// it, and the race detector's shadow of it, to tens of MiB.
	wholeTrims := (64 << 20) / bs
	for step := range 3000 {
		s := rng.Int64N(sectors)
		n := min(sectors-s, 1+rng.Int64N(min(2*bs, 96<<10)/SectorSize))
		op := rng.IntN(6)
		if op == 5 && wholeTrims > 0 { // a whole block, trimmed: deallocated
			wholeTrims--
			s, n = s/(bs/SectorSize)*(bs/SectorSize), min(bs/SectorSize, sectors-s/(bs/SectorSize)*(bs/SectorSize))
		}
		if op == 5 {
			op = 2
		}
		off, l := s*SectorSize, n*SectorSize
		switch op {
		case 0, 1:
			p := randBytes(rng, int(l))
			if _, err := child.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
			for i := s; i < s+n; i++ {
				owned[i] = true
			}
		case 2:
			if err := child.Trim(off, l); err != nil {
				t.Fatal(err)
			}
			copy(model[off:off+l], parentData[off:off+l])
			for i := s; i < s+n; i++ {
				owned[i] = false
			}
		case 3:
			if rng.IntN(10) == 0 {
				if err := child.Flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
		got := make([]byte, l)
		if _, err := child.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model[off:off+l]) {
			t.Fatalf("step %d: read at %#x+%#x differs at %#x", step, off, l, off+firstDiff(got, model[off:off+l]))
		}
		if err := child.ReadStored(got, off); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			want := make([]byte, SectorSize)
			if owned[s+i] {
				want = model[(s+i)*SectorSize : (s+i+1)*SectorSize]
			}
			if !bytes.Equal(got[i*SectorSize:(i+1)*SectorSize], want) {
				t.Fatalf("step %d: ReadStored of sector %d (held by the child: %v) is wrong", step, s+i, owned[s+i])
			}
		}
	}
	if err := child.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(cf.Reopen(), CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		t.Errorf("check: %s", p)
	}
}
