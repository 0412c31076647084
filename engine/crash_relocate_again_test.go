package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestRelocateAgainAfterCrash: power fails during a set-parent, and the
// crashed image is opened for writing and re-linked again, as a resumed
// merge does to the children it moves (vhdkit/chains). The first
// relocation may leave the file ending in part of a locator's data, not
// on a sector boundary; the writable open puts the footer back at the
// end, and that footer must land on a sector boundary, or the next
// relocation writes its header at an odd offset and the image no longer
// opens ("data offset ... is not a sector offset"), its copy at offset
// 0 included. Every crash variant must come out whole, with the new
// link.
func TestRelocateAgainAfterCrash(t *testing.T) {
	c := relocateCases[0] // set-parent
	f, img, _ := setupRelocate(t, c)
	before := f.Syncs()
	if err := c.op(img); err != nil {
		t.Fatal(err)
	}
	syncs := f.Syncs() - before
	again := ParentInfo{UUID: UUID{10}, Timestamp: 9, Name: "again.vhd", Locators: []LocatorPath{{LocatorW2ru, `.\again.vhd`}, {LocatorMacX, "/srv/again.vhd"}}}
	for k := 1; k <= syncs; k++ {
		f, img, data := setupRelocate(t, c)
		crashed := crashAtSync(f, f.Syncs()+k, false, rand.New(rand.NewPCG(uint64(k), 6)), 12)
		if err := c.op(img); err != nil {
			t.Fatal(err)
		}
		for i, cf := range *crashed {
			where := fmt.Sprintf("crash at sync %d/%d, variant %d", k, syncs, i)
			w, err := OpenFile(cf.Reopen(), "crashed", Options{})
			if err != nil {
				t.Fatalf("%s: open for writing: %v", where, err)
			}
			if err := w.SetParentLink(again); err != nil {
				t.Fatalf("%s: set-parent again: %v", where, err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if rep, err := Check(cf.Reopen(), CheckOptions{Bitmaps: true}); err != nil || !rep.OK() {
				t.Fatalf("%s: check after the second set-parent: %v %+v", where, err, rep)
			}
			r, err := OpenFile(cf.Reopen(), "crashed", Options{ReadOnly: true})
			if err != nil {
				t.Fatalf("%s: open after the second set-parent: %v", where, err)
			}
			r.SetParent(zeroDisk(r.Size()))
			got := make([]byte, len(data))
			if _, err := r.ReadAt(got, 0); err != nil || string(got) != string(data) || r.Header().ParentName != "again.vhd" {
				t.Fatalf("%s: data or link lost (%v, parent %q)", where, err, r.Header().ParentName)
			}
			r.Close()
		}
	}
}
