package engine

// Power loss while SetUUID gives an image a new identifier: before every
// write and around every sync of the operation (the durable bytes and
// random subsets of the unsynced writes, torn or whole), the crashed file
// must open, read-only, with the old UUID or the new, its data and parent
// link unchanged; vhd check must be clean, or, only in the windows between
// a dynamic image's two footer writes, report nothing but a footer copy
// that disagrees with the other, which repair puts right (and the UUID
// stays what opening showed); both footer copies of a dynamic image then
// hold that UUID.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"vhdkit/engine/crashfile"
)

var newID = UUID{0x7e, 0x57, 1, 2, 3, 4, 0x40, 5, 0x80, 6, 7, 8, 9, 10, 11, 12}

var setUUIDCases = []relocateCase{
	{name: "fixed", typ: TypeFixed, size: 4 << 20},
	{name: "fixed with a gap", typ: TypeFixed, size: 4 << 20, gap: 3072},
	{name: "dynamic", typ: TypeDynamic, size: 4 << 20},
	{name: "differencing", typ: TypeDifferencing, size: 4 << 20},
	{name: "blktap dynamic", typ: TypeDynamic, size: 4 << 20, tap: true},
	{name: "packed blktap differencing", typ: TypeDifferencing, size: 4 << 20, tap: true, packed: true},
}

func TestCrashDuringSetUUID(t *testing.T) {
	for _, c := range setUUIDCases {
		t.Run(c.name, func(t *testing.T) {
			f, img, _ := setupRelocate(t, c)
			ws, ss := f.Writes(), f.Syncs()
			if err := img.SetUUID(newID); err != nil {
				t.Fatal(err)
			}
			writes, syncs := f.Writes()-ws, f.Syncs()-ss
			if syncs == 0 || writes == 0 {
				t.Fatalf("SetUUID wrote %d times and synced %d times", writes, syncs)
			}
			seen := map[UUID]int{}
			for k := 1; k <= writes; k++ {
				crashAtWrite(t, c, k, seen)
			}
			for k := 1; k <= syncs; k++ {
				for _, after := range []bool{false, true} {
					f, img, data := setupRelocate(t, c)
					old := img.Footer()
					crashed := crashAtSync(f, f.Syncs()+k, after, rand.New(rand.NewPCG(uint64(k), 9)), 3)
					if err := img.SetUUID(newID); err != nil {
						t.Fatal(err)
					}
					for i, cf := range *crashed {
						seen[verifySetUUID(t, c, cf, old, data, fmt.Sprintf("sync %d/%d (after=%v) variant %d", k, syncs, after, i))]++
					}
				}
			}
			if seen[newID] == 0 || len(seen) != 2 {
				t.Errorf("crashes left UUIDs %v: want both the old and the new", seen)
			}
			t.Logf("%d writes, %d syncs; crashed files by UUID: %v", writes, syncs, seen)
		})
	}
}

// crashAtWrite runs SetUUID, crashing before its kth write: the durable
// bytes and three random crashes are verified.
func crashAtWrite(t *testing.T, c relocateCase, k int, seen map[UUID]int) {
	t.Helper()
	f, img, data := setupRelocate(t, c)
	old := img.Footer()
	target := f.Writes() + k
	rng := rand.New(rand.NewPCG(uint64(k), 11))
	var crashed []*crashfile.File
	f.BeforeWrite = func(n int, off int64, size int) error {
		if n == target {
			crashed = append(crashed, crashfile.FromBytes(f.Durable()))
			for range 3 {
				crashed = append(crashed, f.Crash(rng))
			}
		}
		return nil
	}
	if err := img.SetUUID(newID); err != nil {
		t.Fatal(err)
	}
	for i, cf := range crashed {
		seen[verifySetUUID(t, c, cf, old, data, fmt.Sprintf("write %d variant %d", k, i))]++
	}
}

// verifySetUUID checks one crashed file and returns the UUID it opened
// with.
func verifySetUUID(t *testing.T, c relocateCase, f *crashfile.File, old Footer, data []byte, where string) UUID {
	t.Helper()
	got := openedUUID(t, c, crashfile.FromBytes(f.Bytes()), old, data, where)
	rep, err := Check(f, CheckOptions{})
	if err != nil {
		t.Fatalf("%s: check: %v", where, err)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			if !allowedAfterCrash(c, p) {
				t.Fatalf("%s: check: %s", where, p)
			}
		}
		if _, err := RepairFile(f, "crashed", RepairOptions{}); err != nil {
			t.Fatalf("%s: repair: %v", where, err)
		}
		checkFileClean(t, f)
		if again := openedUUID(t, c, f, old, data, where+" (repaired)"); again != got {
			t.Fatalf("%s: opened with UUID %s, after repair %s", where, got, again)
		}
	}
	if c.typ != TypeFixed {
		b := f.Bytes()
		start, end := footerUUID(t, b[:FooterSize]), footerUUID(t, b[len(b)-FooterSize:])
		if start != got || end != got {
			t.Fatalf("%s: footer copies hold %s (offset 0) and %s (end), want %s", where, start, end, got)
		}
	}
	return got
}

// allowedAfterCrash reports whether check may report p on a crashed
// file of case c: on a dynamic image, a footer copy that disagrees with
// the other (the windows between the two footer writes of the UUID's
// relocation and of the tidying relocation after it, relocate.go); on a
// fixed image with a gap, the gap it had before.
func allowedAfterCrash(c relocateCase, p Problem) bool {
	if c.typ == TypeFixed {
		return c.gap > 0 && p.Code == CodeFixedGap
	}
	return p.Fixable && (p.Code == CodeFooterDamaged || p.Code == CodeFooterCopyDiffers)
}

// openedUUID opens f read-only and checks that it holds the old image's
// data, size, timestamp and parent link, and the old UUID or the new;
// it returns the UUID.
func openedUUID(t *testing.T, c relocateCase, f *crashfile.File, old Footer, data []byte, where string) UUID {
	t.Helper()
	img, err := OpenFile(f, "crashed", Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("%s: open: %v", where, err)
	}
	defer img.Close()
	ft := img.Footer()
	if ft.UUID != old.UUID && ft.UUID != newID {
		t.Fatalf("%s: UUID %s, want the old %s or the new %s", where, ft.UUID, old.UUID, newID)
	}
	if ft.Timestamp != old.Timestamp || ft.CurrentSize != old.CurrentSize || ft.DiskType != old.DiskType || ft.CreatorApp != old.CreatorApp {
		t.Fatalf("%s: footer changed beyond the UUID: %+v, was %+v", where, ft, old)
	}
	if c.typ == TypeDifferencing {
		if h := img.Header(); h.ParentUUID != (UUID{8}) || h.ParentName != "old.vhd" {
			t.Fatalf("%s: parent link changed: %s %q", where, h.ParentUUID, h.ParentName)
		}
		img.SetParent(zeroDisk(img.Size()))
	}
	disk := make([]byte, img.Size())
	if _, err := img.ReadAt(disk, 0); err != nil {
		t.Fatalf("%s: read: %v", where, err)
	}
	if !bytes.Equal(disk[:len(data)], data) || !isZero(disk[len(data):]) {
		t.Fatalf("%s: the disk's data changed", where)
	}
	return ft.UUID
}

// footerUUID is the UUID of the raw footer b, which must parse.
func footerUUID(t *testing.T, b []byte) UUID {
	t.Helper()
	ft, err := ParseFooter(b, 0)
	if err != nil {
		t.Fatalf("footer: %v", err)
	}
	return ft.UUID
}
