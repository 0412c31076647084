package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// salvageImage makes a dynamic image of 16 MiB in 1 MiB blocks with
// blocks 0..7 written (block b holds byte b+1), and returns its path,
// what it holds, and each block's file offset.
func salvageImage(t *testing.T) (string, []byte, []int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "d.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: 16 << 20, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, 16<<20)
	for b := range 8 {
		blk := bytes.Repeat([]byte{byte(b + 1)}, 1<<20)
		if _, err := img.WriteAt(blk, int64(b)<<20); err != nil {
			t.Fatal(err)
		}
		copy(model[b<<20:], blk)
	}
	offs := make([]int64, 8)
	for b := range offs {
		offs[b] = int64(img.sparse.entry(int64(b))) * SectorSize
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return path, model, offs
}

// setEntry writes BAT entry b of the image at path.
func setEntry(t *testing.T, path string, b int, v uint32) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var table [8]byte
	if _, err := f.ReadAt(table[:], FooterSize+offHdrTableOffset); err != nil {
		t.Fatal(err)
	}
	at := int64(binary.BigEndian.Uint64(table[:])) + 4*int64(b)
	if _, err := f.WriteAt(binary.BigEndian.AppendUint32(nil, v), at); err != nil {
		t.Fatal(err)
	}
}

// salvaged opens path for salvage and reads all of it.
func salvaged(t *testing.T, path string) ([]byte, *LostReport) {
	t.Helper()
	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("the usual open of the damaged image: %v, want ErrCorrupt", err)
	}
	if _, err := Open(path, Options{Salvage: true}); err == nil {
		t.Fatal("a salvage open for writing was not refused")
	}
	img, err := Open(path, Options{ReadOnly: true, Salvage: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if img.Lost() == nil {
		t.Fatal("the salvage says nothing was lost")
	}
	return got, img.Lost()
}

// TestSalvageTruncated: an image cut in the middle of its sixth block
// (a download cut short) keeps the sectors before the cut; the rest of
// that block (the sector cut in two included) and the blocks after it
// are lost, listed so, and read as never written: zeros.
func TestSalvageTruncated(t *testing.T) {
	path, model, offs := salvageImage(t)
	cut := offs[5] + 512 + 300<<10 + 100 // bitmap, 300 KiB and 100 bytes of block 5
	if err := os.Truncate(path, cut); err != nil {
		t.Fatal(err)
	}
	got, lost := salvaged(t, path)
	lostFrom := int64(5<<20 + 300<<10) // the sector cut in two is lost too
	want := bytes.Clone(model)
	clear(want[lostFrom:]) // the sector cut in two reads as never written, as all that is lost
	if !bytes.Equal(got, want) {
		t.Fatalf("salvage reads differ from the image up to the cut at byte %d", firstDiff(got, want))
	}
	if len(lost.Ranges) != 2 || lost.Ranges[0].Off != lostFrom || lost.Ranges[0].Len != 6<<20-lostFrom ||
		lost.Ranges[1].Off != 6<<20 || lost.Ranges[1].Len != 2<<20 || lost.Bytes != 8<<20-lostFrom {
		t.Errorf("lost %+v (%d bytes), want %d..6M cut, 6M..8M past the end", lost.Ranges, lost.Bytes, lostFrom)
	}
}

// TestSalvageMisplaced: a block over another block, and a zero entry (a
// hole in the table), read as never written, and only they are lost.
func TestSalvageMisplaced(t *testing.T) {
	path, model, offs := salvageImage(t)
	setEntry(t, path, 6, uint32(offs[2]/SectorSize))
	setEntry(t, path, 3, 0)
	got, lost := salvaged(t, path)
	want := bytes.Clone(model)
	clear(want[3<<20 : 4<<20])
	// Of blocks 2 and 6, sharing a place, one is dropped; the other
	// reads block 2's data.
	dropped := 6
	if got[2<<20] == 0 {
		dropped = 2
	}
	clear(want[dropped<<20 : (dropped+1)<<20])
	if dropped == 2 {
		copy(want[6<<20:7<<20], model[2<<20:3<<20])
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("salvage reads differ at byte %d", firstDiff(got, want))
	}
	if lost.Bytes != 2<<20 || len(lost.Ranges) != 2 || lost.Ranges[0].Off != min(3, int64(dropped))<<20 {
		t.Errorf("lost %+v, want blocks 3 and %d", lost.Ranges, dropped)
	}
}

// TestSalvageSoundImage: a salvage open of a sound image loses nothing.
func TestSalvageSoundImage(t *testing.T) {
	path, model, _ := salvageImage(t)
	img, err := Open(path, Options{ReadOnly: true, Salvage: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) || img.Lost() != nil {
		t.Fatalf("salvage of a sound image: %v, same %v, lost %v", err, bytes.Equal(got, model), img.Lost())
	}
	checkClean(t, path)
}
