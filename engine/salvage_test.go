package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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

// TestSalvageMisplaced: two blocks sharing a place in the file (block 6
// pointed at block 2's) are both dropped, since which holds the data
// cannot be told; a zero entry (a hole in the table) is dropped too; the
// rest reads as the image did, and each lost block is listed once.
func TestSalvageMisplaced(t *testing.T) {
	path, model, offs := salvageImage(t)
	setEntry(t, path, 6, uint32(offs[2]/SectorSize))
	setEntry(t, path, 3, 0)
	got, lost := salvaged(t, path)
	want := bytes.Clone(model)
	for _, b := range []int{2, 3, 6} {
		clear(want[b<<20 : (b+1)<<20])
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("salvage reads differ at byte %d", firstDiff(got, want))
	}
	if lost.Bytes != 3<<20 || len(lost.Ranges) != 3 || lost.Ranges[0].Off != 2<<20 || lost.Ranges[1].Off != 3<<20 || lost.Ranges[2].Off != 6<<20 ||
		!strings.Contains(lost.Ranges[0].Why, "shares its place") || !strings.Contains(lost.Ranges[1].Why, "zero") {
		t.Errorf("lost %+v, want block 2 (shared place), block 3 (zero entry), block 6 (shared place)", lost.Ranges)
	}
}

// TestSalvageEachBlockOnce: an entry over both the dynamic header and
// the table is one block lost, listed once, and the sound block it also
// overlaps (block 0, right after the table) stays.
func TestSalvageEachBlockOnce(t *testing.T) {
	path, model, _ := salvageImage(t)
	setEntry(t, path, 10, 1) // block 10 at 0x200: over the header and the BAT
	got, lost := salvaged(t, path)
	if !bytes.Equal(got[:10<<20], model[:10<<20]) {
		t.Errorf("sound blocks dropped: reads differ at byte %d", firstDiff(got[:10<<20], model[:10<<20]))
	}
	if lost.Bytes != 1<<20 || len(lost.Ranges) != 1 || lost.Ranges[0].Off != 10<<20 {
		t.Errorf("lost %+v (%d bytes), want block 10 once", lost.Ranges, lost.Bytes)
	}
}

// TestSalvageAllOverStructures: every entry over the header and the
// table: every block is dropped, none reads the file's structures as
// data, and the lost list adds up to the disk.
func TestSalvageAllOverStructures(t *testing.T) {
	path, _, _ := salvageImage(t)
	for b := range 16 {
		setEntry(t, path, b, 1)
	}
	got, lost := salvaged(t, path)
	if !bytes.Equal(got, make([]byte, len(got))) || lost.Bytes != 16<<20 || len(lost.Ranges) != 1 {
		t.Errorf("lost %+v (%d bytes); the disk reads zeros: %v", lost.Ranges, lost.Bytes, bytes.Equal(got, make([]byte, len(got))))
	}
}

// TestSalvageCutBlockOverlap: in a file cut short, an entry pointing
// into the cut last block is checked for overlap like any other: both
// are dropped, and block 8 does not read block 7's bytes as its own.
func TestSalvageCutBlockOverlap(t *testing.T) {
	path, model, offs := salvageImage(t)
	if err := os.Truncate(path, offs[7]+512+512<<10); err != nil {
		t.Fatal(err)
	}
	setEntry(t, path, 8, uint32((offs[7]+4096)/SectorSize))
	got, lost := salvaged(t, path)
	want := bytes.Clone(model[:7<<20])
	if !bytes.Equal(got[:7<<20], want) || !bytes.Equal(got[7<<20:], make([]byte, 9<<20)) {
		t.Errorf("blocks 0..6 must read as written and the rest as zeros")
	}
	if lost.Bytes != 2<<20 || !strings.Contains(lost.Ranges[0].Why, "shares its place") {
		t.Errorf("lost %+v, want blocks 7 and 8 sharing a place", lost.Ranges)
	}
}

// TestSalvageSparseTable: the sparse-table file of
// TestSparseTableRefusedFast (a few KiB on disk claiming 4M entries) is
// refused by a salvage open as by the usual one, at the first chunk of
// the table that is all holes, having allocated little. (Found by
// review: the salvage read all 16 MiB of holes into memory.)
func TestSalvageSparseTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse-table.vhd")
	sparseTableImage(t, path, MaxSize, 512<<10)
	var err error
	mem, _ := allocated(func() { _, err = Open(path, Options{ReadOnly: true, Salvage: true}) })
	if !errors.Is(err, ErrCorrupt) || mem > 4<<20 {
		t.Errorf("salvage open of a sparse table: %v, %d bytes allocated", err, mem)
	}
}

// TestSalvageFixedExtents: a salvage open of a sound, sparse fixed image
// describes it as the usual open does (the file's SEEK_DATA is not
// hidden).
func TestSalvageFixedExtents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.vhd")
	img, err := Create(path, CreateOptions{Type: TypeFixed, Size: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{1}, 4096), 32<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	var got [2][]Extent
	for i, salvage := range []bool{false, true} {
		img, err := Open(path, Options{ReadOnly: true, Salvage: salvage})
		if err != nil {
			t.Fatal(err)
		}
		got[i], err = img.Extents(0, img.Size())
		img.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(got[0], got[1]) {
		t.Errorf("extents: usual %+v, salvage %+v", got[0], got[1])
	}
	checkClean(t, path)
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

// TestBitmapHoles is a download that set the file's length first and
// did not finish: from the middle of block 5 to the end the file is a
// hole, the footer at the end included. check warns of each block whose
// bitmap is a hole (before, it found only the footer, and after repair
// nothing); a salvage lists them as lost; blocks before the cut read as
// written.
func TestBitmapHoles(t *testing.T) {
	path, model, offs := salvageImage(t)
	st, _ := os.Stat(path)
	from := offs[5] + 512 + 300<<10
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, from, st.Size()-from)
	f.Close()
	if err != nil {
		t.Skipf("this file system cannot punch holes: %v", err)
	}
	holes := func() (codes []string) {
		rep, err := CheckPath(path, CheckOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rep.Problems {
			codes = append(codes, p.Code)
		}
		return codes
	}
	want := []string{CodeFooterDamaged, CodeBitmapHole, CodeBitmapHole}
	if got := holes(); !slices.Equal(got, want) {
		t.Errorf("check: %v, want %v (blocks 6 and 7's bitmaps are holes)", got, want)
	}

	img, err := Open(path, Options{ReadOnly: true, Salvage: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	lost := img.Lost()
	img.Close()
	if !bytes.Equal(got[:5<<20], model[:5<<20]) {
		t.Errorf("blocks before the cut read differently, at byte %d", firstDiff(got[:5<<20], model[:5<<20]))
	}
	if lost == nil || len(lost.Ranges) != 1 || lost.Ranges[0].Off != 6<<20 || lost.Ranges[0].Len != 2<<20 || !strings.Contains(lost.Ranges[0].Why, "hole") {
		t.Errorf("salvage lost %+v, want blocks 6 and 7 (bitmaps in the hole)", lost)
	}

	// Once repair has written the footer back, the file cannot be told
	// from one vhd left empty blocks in (bitmap_hole.go): vhd repair
	// says what it saw before (TestRepairSaysBitmapHoles).
	if _, err := Repair(path, RepairOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := holes(); len(got) != 0 {
		t.Errorf("check after repair: %v", got)
	}
}

// TestBitmapHolesOfAKill: vhd allocates a block by growing the file over
// it and writes its bitmap at a flush, so an allocated block whose
// bitmap is a hole is what a kill can leave; with the footer at the end
// sound, check does not call it a loss (a backup pull resumed after a
// kill was refused as 'does not pass vhd check').
func TestBitmapHolesOfAKill(t *testing.T) {
	path, _, offs := salvageImage(t)
	st, _ := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Block 7, bitmap and data, never written; the footer after it is.
	from := offs[7] / 4096 * 4096
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, from, st.Size()-FooterSize-from)
	if err == nil {
		if start, _ := unix.Seek(int(f.Fd()), offs[7], unix.SEEK_DATA); start <= offs[7] {
			t.Fatalf("block 7's bitmap at %#x is no hole (next data %#x): the test tests nothing", offs[7], start)
		}
	}
	f.Close()
	if err != nil {
		t.Skipf("this file system cannot punch holes: %v", err)
	}
	checkClean(t, path)
	img, err := Open(path, Options{ReadOnly: true, Salvage: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.Lost() != nil {
		t.Errorf("a salvage of it lists %+v as lost", img.Lost())
	}
}
