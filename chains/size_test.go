package chains

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
)

// Layers of different sizes (item 3 of issue 15; blktap_size_test.go runs
// the same against Xen's tools): past a layer's end the chain reads
// zeros, and what lies below that layer does not show through there.

// sizedChain makes g (20 MiB, its first gData bytes written), p over it
// (16 MiB, nothing written) and c over p (20 MiB), with links made
// directly.
func sizedChain(t *testing.T, dir string, gData int64) (g, p, c string) {
	t.Helper()
	g, p, c = filepath.Join(dir, "g.vhd"), filepath.Join(dir, "p.vhd"), filepath.Join(dir, "c.vhd")
	img, err := engine.Create(g, engine.CreateOptions{Type: engine.TypeDynamic, Size: 20 << 20})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt(bytes.Repeat([]byte{7}, int(gData)), 0)
	img.Close()
	link := func(child, parent string, size int64) {
		pi, err := engine.Open(parent, engine.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		ft := pi.Footer()
		pi.Close()
		locs, _ := Locators(child, parent)
		img, err := engine.Create(child, engine.CreateOptions{Type: engine.TypeDifferencing, Size: size,
			Parent: &engine.ParentInfo{UUID: ft.UUID, Timestamp: ft.Timestamp, Name: filepath.Base(parent), Locators: locs}})
		if err != nil {
			t.Fatal(err)
		}
		img.Close()
	}
	link(p, g, 16<<20)
	link(c, p, 20<<20)
	return g, p, c
}

func TestLayersOfDifferentSizes(t *testing.T) {
	for _, gData := range []int64{20 << 20, 16 << 20} {
		dir := t.TempDir()
		g, p, c := sizedChain(t, dir, gData)
		model := make([]byte, 20<<20)
		copy(model, bytes.Repeat([]byte{7}, 16<<20)) // g shows through p up to p's end only
		ch, err := Open(c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		verify(t, ch, model, "c over a smaller p over a larger g")
		// Zeros written past p's end are elided (the chain below holds
		// nothing there); data goes to c.
		ch.WriteAt(make([]byte, 1<<20), 18<<20)
		data := bytes.Repeat([]byte{9}, 3<<20)
		if _, err := ch.WriteAt(data, 15<<20); err != nil {
			t.Fatal(err)
		}
		copy(model[15<<20:], data)
		if err := ch.Trim(16<<20, 1<<20); err != nil {
			t.Fatal(err)
		}
		clear(model[16<<20 : 17<<20])
		verify(t, ch, model, "after writes and a trim")
		if err := ch.Close(); err != nil {
			t.Fatal(err)
		}
		_, err = Merge(context.Background(), c, MergeOptions{})
		if gData > 16<<20 {
			// Grown, p would show g's data past 16 MiB where c shows
			// zeros: refused, nothing changed.
			if err == nil || !strings.Contains(err.Error(), "cannot be merged there") {
				t.Fatalf("merge over a parent holding data past the target's end: %v", err)
			}
			openVerify(t, c, model, Options{})
			checkClean(t, g, p, c)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		pc, err := Open(p, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if pc.Size() != 20<<20 {
			t.Fatalf("merge target is %d bytes, want the child's 20 MiB", pc.Size())
		}
		verify(t, pc, model, "p after the merge")
		pc.Close()
		checkClean(t, g, p)
	}
}

// TestLiveMergeOfALargerLayerRefused: a live merge cannot grow its target
// under the traffic; it says to merge offline, which does, and changes
// nothing.
func TestLiveMergeOfALargerLayerRefused(t *testing.T) {
	dir := t.TempDir()
	g, p, c := sizedChain(t, dir, 16<<20)
	ch, err := Open(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, 20<<20)
	copy(model, bytes.Repeat([]byte{7}, 16<<20))
	if _, err := ch.Merge(context.Background(), "", nil); err == nil || !strings.Contains(err.Error(), "vhd merge") {
		t.Fatalf("live merge of a layer larger than its target: %v", err)
	}
	verify(t, ch, model, "after the refused live merge")
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, g, p, c)
}
