package service

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"vhdkit/chains"
	"vhdkit/engine"
)

// TestStopSummaryNamesRemovedUndoDisk: a host stopping with an export on
// an undo disk it made and nothing wrote says the undo disk was removed;
// one that holds a write is kept and not named.
func TestStopSummaryNamesRemovedUndoDisk(t *testing.T) {
	dir := t.TempDir()
	var images []string
	for _, n := range []string{"a.vhd", "b.vhd"} {
		p := filepath.Join(dir, n)
		img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeDynamic, Size: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		img.Close()
		images = append(images, p)
	}
	h := New(Config{})
	for i, p := range images {
		c, created, err := chains.OpenUndo(p, chains.Options{})
		if err != nil || !created {
			t.Fatalf("open undo %s: %v", p, err)
		}
		if i == 1 {
			if _, err := c.WriteAt([]byte("kept"), 0); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := h.AddExport(context.Background(), filepath.Base(p), c, ExportOptions{Description: p, Undo: true}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Run(ctx); err != nil {
		t.Fatal(err)
	}
	got := h.StopSummary().UndoRemoved
	if want := []string{chains.UndoPath(images[0])}; !slices.Equal(got, want) {
		t.Errorf("summary names %q as removed, want %q", got, want)
	}
	if _, err := os.Stat(chains.UndoPath(images[0])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the empty undo disk is left: %v", err)
	}
	for _, p := range append(images, chains.UndoPath(images[1])) {
		if rep, err := engine.CheckPath(p, engine.CheckOptions{Bitmaps: true}); err != nil || !rep.OK() {
			t.Errorf("check %s: %v %v", p, err, rep)
		}
	}
}
