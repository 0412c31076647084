package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"vhdkit/engine/crashfile"
)

// TestCrashDifferencing cuts the power at every sync of a workload on a
// differencing layer over a parent full of data: writes (zeros among
// them, which must be stored, not elided, since the parent holds data
// under them), unaligned writes, zeroing in both modes, flushes. Each
// crashed child must pass Check after Repair at most and read, through
// its parent, every sector as flushed or as written since: never zeros
// where neither put them (a bitmap bit claiming unsynced data would).
func TestCrashDifferencing(t *testing.T) {
	const size = 3<<20 + 7*SectorSize
	rng := rand.New(rand.NewPCG(40, 1))
	parentData := randBytes(rng, size)
	parent, err := CreateFile(crashfile.New(), "parent", CreateOptions{Type: TypeFixed, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parent.WriteAt(parentData, 0); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for seed := uint64(1); seed <= 3; seed++ {
		f := crashfile.New()
		child, err := CreateFile(f, "child", CreateOptions{Type: TypeDifferencing, Size: size, BlockSize: 512 << 10,
			UUID: UUID{3}, Time: time.Unix(1e9, 0), Parent: &ParentInfo{UUID: parent.Footer().UUID, Name: "parent.vhd"}})
		if err != nil {
			t.Fatal(err)
		}
		child.SetParent(parent)
		m := newCrashModel(size)
		copy(m.cur, parentData)
		copy(m.flushed, parentData)
		crng := rand.New(rand.NewPCG(seed, 2))
		verifyAt := func(where string) {
			for v := 0; v < 2; v++ {
				c := f.Crash(crng)
				if err := verifyCrashedChild(c, parent, m); err != nil {
					t.Fatalf("seed %d, %s, variant %d: %v", seed, where, v, err)
				}
				checked++
			}
		}
		f.BeforeSync = func(n int) error { verifyAt(fmt.Sprintf("before sync %d", n)); return nil }
		f.AfterSync = func(n int) { verifyAt(fmt.Sprintf("after sync %d", n)) }
		wrng := rand.New(rand.NewPCG(seed, 3))
		for op := 0; op < 60; op++ {
			off := wrng.Int64N(size - 1)
			n := min(wrng.Int64N(200<<10)+1, size-off)
			switch k := wrng.IntN(10); {
			case k < 6:
				p := randBytes(wrng, int(n))
				if k == 5 {
					clear(p)
				}
				m.write(p, off)
				if _, err := child.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
			case k < 8:
				mode := ZeroMayDeallocate
				if k == 7 {
					mode = ZeroKeepAllocated
				}
				m.zero(off, n)
				if err := child.Zero(off, n, mode); err != nil {
					t.Fatal(err)
				}
			default:
				if err := child.Flush(); err != nil {
					t.Fatal(err)
				}
				m.flush()
			}
		}
		f.BeforeSync, f.AfterSync = nil, nil
		if err := child.Close(); err != nil {
			t.Fatal(err)
		}
		m.flush()
		if err := verifyCrashedChild(f.Crash(crng), parent, m); err != nil {
			t.Fatalf("seed %d, after close: %v", seed, err)
		}
	}
	t.Logf("%d crashed children checked", checked)
}

// verifyCrashedChild repairs (if Check asks for it), checks, and reads
// a crashed child through its parent against the model.
func verifyCrashedChild(c *crashfile.File, parent Disk, m *crashModel) error {
	if rep, err := Check(c, CheckOptions{Bitmaps: true}); err != nil || !rep.OK() {
		if _, err := RepairFile(c, "crashed", RepairOptions{Bitmaps: true}); err != nil {
			return fmt.Errorf("repair: %w", err)
		}
		if rep, err := Check(c, CheckOptions{Bitmaps: true}); err != nil || !rep.OK() {
			return fmt.Errorf("check after repair: %v %+v", err, rep)
		}
	}
	img, err := OpenFile(c.Reopen(), "crashed", Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer img.Close()
	img.SetParent(parent)
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	return m.checkCrashed(got)
}
