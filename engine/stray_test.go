package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"vhdkit/engine/crashfile"
)

// strayImage makes an image whose file holds data under clear bitmap
// bits, as a process killed after writes it never flushed leaves it:
// blocks written and flushed, then more sectors written into them (and
// into a new block) without a flush, and every write in the file. It
// returns the file and the disk the image must read as.
func strayImage(t *testing.T, typ DiskType, parent Disk) (*crashfile.File, []byte) {
	t.Helper()
	const size, bs = 1 << 20, 64 << 10
	f := crashfile.New()
	opts := CreateOptions{Type: typ, Size: size, BlockSize: bs}
	if parent != nil {
		pf := parent.(*Image).Footer()
		opts.Parent = &ParentInfo{UUID: pf.UUID, Timestamp: pf.Timestamp, Name: "parent.vhd"}
	}
	img, err := CreateFile(f, "stray", opts)
	if err != nil {
		t.Fatal(err)
	}
	img.SetParent(parent)
	rng := rand.New(rand.NewPCG(1, uint64(typ)))
	for b := int64(0); b < 6; b++ {
		if _, err := img.WriteAt(randBytes(rng, 4096), b*bs+8192); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	want := readDisk(t, img)
	for b := int64(0); b < 6; b++ { // runs of several lengths, never flushed
		if _, err := img.WriteAt(randBytes(rng, int(512*(1+b*7))), b*bs+20480+b*512); err != nil {
			t.Fatal(err)
		}
	}
	// The process dies: every write is in the file, nothing more.
	return crashfile.FromBytes(f.Bytes()), want
}

// rawView reads the disk as a reader that ignores bitmaps does (qemu-img
// on a dynamic image): the data area of every allocated block.
func rawView(t *testing.T, f File) []byte {
	t.Helper()
	img, err := OpenFile(f, "raw view", Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	s := img.sparse
	got := make([]byte, img.Size())
	for b := range s.bat {
		if e := s.entry(int64(b)); e != batUnused {
			p := got[int64(b)*s.blockSize:][:s.sectorsIn(int64(b))*SectorSize]
			if err := s.pread(p, s.dataOff(e)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return got
}

// TestRepairZeroesStrayData: Check reports data under clear bits by
// default, Repair zeroes it, and then a reader that ignores bitmaps reads
// what the engine reads; on a differencing image the parent still shows
// there.
func TestRepairZeroesStrayData(t *testing.T) {
	parent, err := CreateFile(crashfile.New(), "parent", CreateOptions{Type: TypeFixed, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	parent.WriteAt(bytes.Repeat([]byte("parent"), 200000)[:1<<20], 0)
	for _, c := range []struct {
		typ    DiskType
		parent Disk
	}{{TypeDynamic, nil}, {TypeDifferencing, parent}} {
		t.Run(c.typ.String(), func(t *testing.T) {
			f, want := strayImage(t, c.typ, c.parent)
			rep, err := Check(f, CheckOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != 6 {
				t.Errorf("check: %v; want 6 blocks with %s", rep.Problems, CodeDataUnderClearBit)
			}
			for _, p := range rep.Problems {
				if p.Code != CodeDataUnderClearBit || !p.Fixable || p.Fatal {
					t.Errorf("check: %s; want a fixable %s warning", p, CodeDataUnderClearBit)
				}
			}
			if got := readImage(t, f, c.parent); !bytes.Equal(got, want) {
				t.Fatalf("before repair, reads differ at %d", firstDiff(got, want))
			}
			did, err := RepairFile(f, "stray", RepairOptions{})
			if err != nil || len(did) != 1 {
				t.Fatalf("repair: %q, %v", did, err)
			}
			if rep, err := Check(f, CheckOptions{}); err != nil || !rep.OK() {
				t.Fatalf("check after repair: %v, %v", rep, err)
			}
			if got := readImage(t, f, c.parent); !bytes.Equal(got, want) {
				t.Errorf("after repair, reads differ at %d", firstDiff(got, want))
			}
			if c.typ == TypeDynamic {
				if raw := rawView(t, f); !bytes.Equal(raw, want) {
					t.Errorf("after repair, a reader ignoring bitmaps sees other data at %d", firstDiff(raw, want))
				}
			}
		})
	}
}

// readImage reads the whole disk of the image in f (parent: a
// differencing image's parent).
func readImage(t *testing.T, f *crashfile.File, parent Disk) []byte {
	t.Helper()
	img, err := OpenFile(f.Reopen(), "stray", Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	img.SetParent(parent)
	return readDisk(t, img)
}

// TestRepairStrayDataPowerLoss: power fails before each write and each
// sync of Repair zeroing stray data, and the crash keeps a random part of
// what was not synced. Whatever it keeps, the image reads as before, and
// a second Repair leaves it clean and readable by readers that ignore
// bitmaps alike.
func TestRepairStrayDataPowerLoss(t *testing.T) {
	f, want := strayImage(t, TypeDynamic, nil)
	points := 0
	for _, atSync := range []bool{false, true} {
		for n := 1; ; n++ {
			h := f.Snapshot()
			var mid *crashfile.File
			rng := rand.New(rand.NewPCG(uint64(n), 2))
			cut := func(k int) error {
				if mid == nil && k == n {
					mid = h.Crash(rng)
				}
				if mid != nil {
					return errPowerCut
				}
				return nil
			}
			if atSync {
				h.BeforeSync = cut
			} else {
				h.BeforeWrite = func(k int, _ int64, _ int) error { return cut(k) }
			}
			_, err := RepairFile(h, "stray", RepairOptions{})
			if mid == nil { // Repair finished before the nth write or sync
				if err != nil {
					t.Fatal(err)
				}
				break
			}
			points++
			name := fmt.Sprintf("sync %d", n)
			if !atSync {
				name = fmt.Sprintf("write %d", n)
			}
			if err != nil && !errors.Is(err, errPowerCut) {
				t.Fatalf("%s: repair: %v", name, err)
			}
			if got := readImage(t, mid, nil); !bytes.Equal(got, want) {
				t.Fatalf("power cut at %s: reads differ at %d", name, firstDiff(got, want))
			}
			if _, err := RepairFile(mid, "stray", RepairOptions{}); err != nil {
				t.Fatalf("%s: second repair: %v", name, err)
			}
			if rep, err := Check(mid, CheckOptions{}); err != nil || !rep.OK() {
				t.Fatalf("%s: check after the second repair: %v, %v", name, rep, err)
			}
			if got := readImage(t, mid, nil); !bytes.Equal(got, want) {
				t.Fatalf("%s: after the second repair, reads differ at %d", name, firstDiff(got, want))
			}
			if raw := rawView(t, mid); !bytes.Equal(raw, want) {
				t.Fatalf("%s: after the second repair, a reader ignoring bitmaps sees other data at %d", name, firstDiff(raw, want))
			}
		}
	}
	if points < 7 {
		t.Errorf("only %d points to cut power at; want a write per block and a sync", points)
	}
}
