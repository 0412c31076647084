package chains

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vhdkit/engine"
	"vhdkit/internal/blktap"
)

// Interop with Xen's blktap, item 2 of issue 15: chains Xen's tools
// re-link record the parent file's modification time, whatever made the
// child.

// vhdkitChain makes base (16 MiB, 2 MiB blocks: the only size blktap
// handles) and n-1 snapshots over it, each written at random, and
// returns the paths, base first, and what the top reads.
func vhdkitChain(t *testing.T, dir string, n int, seed uint64) ([]string, []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 15))
	model := make([]byte, 16<<20)
	paths := []string{filepath.Join(dir, "base.vhd")}
	img, err := engine.Create(paths[0], engine.CreateOptions{Type: engine.TypeDynamic, Size: int64(len(model))})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	for i := range n {
		if i > 0 {
			paths = append(paths, filepath.Join(dir, "l"+string(rune('0'+i))+".vhd"))
			c, err := Snapshot(paths[i-1], paths[i], CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		for range 3 {
			off := rng.Int64N(int64(len(model))/512-64) * 512
			p := randBytes(rng, 512*(1+rng.IntN(64)))
			writeThrough(t, paths[i], off, p)
			copy(model[off:], p)
		}
	}
	return paths, model
}

// TestVhdkitChainRelinkedByXen: vhd-util coalesces the middle of a vhdkit
// chain into the base and re-links the top onto the base (modify -p),
// stamping the base file's time into a child whose creator is vhdkit's.
// vhdkit reads the chain as vhd-util does; before, it refused the top:
// "parent was modified" (it trusted file times only from "tap" children).
func TestVhdkitChainRelinkedByXen(t *testing.T) {
	paths, model := vhdkitChain(t, t.TempDir(), 3, 1)
	base, mid, top := paths[0], paths[1], paths[2]
	blktap.Util(t, "coalesce", "-n", mid)
	blktap.Util(t, "modify", "-n", top, "-p", base)
	c, err := Open(top, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	verify(t, c, model, "vhdkit")
	c.Close()
	if got := blktap.Read(t, top, int64(len(model))); !bytes.Equal(got, model) {
		t.Fatalf("vhd-util reads the top wrong at %d", firstDiff(got, model))
	}
	blktap.Check(t, top)
	blktap.Check(t, base)
	checkClean(t, top, base)
}

// TestModifiedParentNamesWhatWasCompared: the refusal names the recorded
// time and both times it was compared with, and points at vhd set-parent
// --accept-modified-parent, the explicit choice for a parent whose data
// is known unchanged; plain set-parent refuses it as Open does.
func TestModifiedParentNamesWhatWasCompared(t *testing.T) {
	paths, _ := vhdkitChain(t, t.TempDir(), 2, 2)
	img, err := engine.Open(paths[0], engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte("a tool rewrote the footer"), 1<<20)
	img.WriteAt(make([]byte, 25), 1<<20) // and the data is as it was
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(paths[1], Options{ReadOnly: true})
	if !errors.Is(err, ErrParentModified) {
		t.Fatalf("open: %v, want ErrParentModified", err)
	}
	for _, want := range []string{"recorded parent time", "footer says", "file was modified", "vhd set-parent --accept-modified-parent " + paths[1] + " " + paths[0]} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if strings.Count(err.Error(), "--accept-modified-parent") != strings.Count(err.Error(), "vhd set-parent --accept-modified-parent") {
		t.Errorf("the error offers --accept-modified-parent other than on set-parent: %v", err)
	}
	if err := SetParent(paths[1], paths[0], SetParentOptions{}); !errors.Is(err, ErrParentModified) {
		t.Fatalf("plain set-parent onto a modified parent: %v, want ErrParentModified", err)
	}
	if err := SetParent(paths[1], paths[0], SetParentOptions{AcceptModified: true}); err != nil {
		t.Fatalf("set-parent --accept-modified-parent: %v", err)
	}
	c, err := Open(paths[1], Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("after set-parent: %v", err)
	}
	c.Close()
	checkClean(t, paths...)
}

// TestCopiedChainReadsItsOwnParent (item 5): a vhdkit chain is copied to
// another folder while the original stays, and the original parent is
// then written. blktap, which follows the first locator that opens, must
// read the copy's parent, as vhdkit does; with the absolute W2ku locator
// first it read the original's.
func TestCopiedChainReadsItsOwnParent(t *testing.T) {
	dir := t.TempDir()
	paths, model := vhdkitChain(t, filepath.Join(dir), 2, 3)
	dst := filepath.Join(dir, "copy")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	var copies []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		c := filepath.Join(dst, filepath.Base(p))
		if err := os.WriteFile(c, b, 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, c)
	}
	// The original parent changes (same UUID): only a reader that
	// followed the old path sees it.
	img, err := engine.Open(paths[0], engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt(bytes.Repeat([]byte{0xcc}, 16<<20), 0)
	img.Close()

	top := copies[1]
	if got := blktap.Read(t, top, int64(len(model))); !bytes.Equal(got, model) {
		t.Errorf("vhd-util reads the copied chain wrong at %d (from the original parent?)", firstDiff(got, model))
	}
	c, err := Open(top, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	verify(t, c, model, "vhdkit")
	blktap.Check(t, top)
	checkClean(t, copies...)
}

// TestParentWrittenInTheRecordedSecond: a parent written after its child,
// in the very second whose time the child recorded, is refused, though
// its file time (in whole seconds) matches: file times count only while
// the parent was not written after the child, as Xen's tools leave them.
func TestParentWrittenInTheRecordedSecond(t *testing.T) {
	paths, _ := vhdkitChain(t, t.TempDir(), 2, 4)
	img, err := engine.Open(paths[0], engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte("written under its child"), 0)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := engine.Open(paths[1], engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	second := engine.VHDTime(c.Header().ParentTimestamp)
	c.Close()
	if err := os.Chtimes(paths[1], second, second.Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(paths[0], second, second.Add(900*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(paths[1], Options{ReadOnly: true}); !errors.Is(err, ErrParentModified) {
		t.Fatalf("a parent written after its child, in the recorded second: %v, want ErrParentModified", err)
	}
	// Written before the child (as when Xen's tools re-link it), the
	// same file time is accepted.
	if err := os.Chtimes(paths[0], second, second.Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(paths[1], second, second.Add(900*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	c2, err := Open(paths[1], Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("a parent's file time recorded after it was written: %v", err)
	}
	c2.Close()
	checkClean(t, paths...)
}
