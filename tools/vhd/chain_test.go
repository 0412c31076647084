package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"vhdkit/chains"
	"vhdkit/internal/blktap"
)

// writeThroughChain writes random data at a few places of the chain whose
// top is path, as a guest would, and updates the model.
func writeThroughChain(t *testing.T, path string, model []byte, seed uint64) {
	t.Helper()
	c, err := chains.Open(path, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	for range 20 {
		off := rng.Int64N(int64(len(model)) - 70000)
		b := make([]byte, rng.IntN(70000))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if _, err := c.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], b)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func rawOf(t *testing.T, img, dst string) []byte {
	t.Helper()
	os.Remove(dst)
	vhdOK(t, "convert", "--to", "raw", img, dst)
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestChainWorkflow drives the chain commands the way a user would:
// snapshot, info, tree, undo, set-parent after a move, merge, compact,
// resize, and checks the data through convert at each step.
func TestChainWorkflow(t *testing.T) {
	dir := t.TempDir()
	const size = 12 << 20
	model := makeRaw(t, filepath.Join(dir, "base.raw"), size, region{off: 1 << 20, n: 3 << 20}, region{off: 8 << 20, n: 1 << 20})
	base, top := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "top.vhd")
	vhdOK(t, "convert", "--to", "dynamic", filepath.Join(dir, "base.raw"), base)
	vhdOK(t, "snapshot", base, top)
	if st, _ := os.Stat(base); st.Mode().Perm()&0o222 != 0 {
		t.Errorf("snapshot left %s writable (%v)", base, st.Mode())
	}
	writeThroughChain(t, top, model, 1)
	if got := rawOf(t, top, filepath.Join(dir, "out.raw")); !bytes.Equal(got, model) {
		t.Fatal("convert of the chain differs from the model")
	}

	var info struct {
		Type   string `json:"type"`
		Parent *struct {
			Name string `json:"name"`
		} `json:"parent"`
		Chain []struct {
			File  string `json:"file"`
			Found string `json:"found_via"`
		} `json:"chain"`
	}
	vhdJSON(t, &info, "info", "--json", top)
	if info.Type != "differencing" || info.Parent == nil || info.Parent.Name != "base.vhd" || len(info.Chain) != 2 || info.Chain[1].Found != "W2ru locator" {
		t.Errorf("info of the top: %+v", info)
	}

	var forest []*chains.Node
	vhdJSON(t, &forest, "tree", "--json", dir)
	if len(forest) != 1 || forest[0].Path != base || len(forest[0].Children) != 1 || forest[0].Children[0].Path != top {
		t.Errorf("tree: %+v", forest)
	}

	// Undo: writes through the undo disk leave top untouched until
	// discarded.
	before, _ := os.ReadFile(top)
	c, _, err := chains.OpenUndo(top, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.WriteAt(bytes.Repeat([]byte{9}, 4096), 0)
	c.Close()
	if r := vhdOK(t, "undo", "status", top); !strings.Contains(r.stdout, "has an undo disk") {
		t.Errorf("undo status: %s", r)
	}
	vhdOK(t, "undo", "discard", top)
	if after, _ := os.ReadFile(top); !bytes.Equal(before, after) {
		t.Error("discarding the undo disk changed the image")
	}

	// Move the base away: tree marks the top broken, set-parent repairs it.
	sub := filepath.Join(dir, "store")
	os.Mkdir(sub, 0o755)
	moved := filepath.Join(sub, "base.vhd")
	os.Rename(base, moved)
	base = moved
	if r := vhdOK(t, "tree", dir); !strings.Contains(r.stdout, "BROKEN") {
		t.Errorf("tree after the move:\n%s", r)
	}
	vhdCode(t, 1, "convert", "--to", "raw", top, filepath.Join(dir, "x.raw"))
	vhdOK(t, "set-parent", top, base)
	if got := rawOf(t, top, filepath.Join(dir, "out.raw")); !bytes.Equal(got, model) {
		t.Fatal("chain differs after set-parent")
	}
	elsewhere := t.TempDir()
	if r := vhdCode(t, 1, "convert", "--parent-dir", elsewhere, "--to", "raw", top, filepath.Join(dir, "y.raw")); !strings.Contains(r.stderr, "outside the allowed folders") {
		t.Errorf("a parent outside --parent-dir:\n%s", r)
	}

	// Flatten, then merge the top into the base.
	vhdOK(t, "merge", "--to", filepath.Join(dir, "flat.vhd"), "--type", "fixed", top)
	if got := rawOf(t, filepath.Join(dir, "flat.vhd"), filepath.Join(dir, "out.raw")); !bytes.Equal(got, model) {
		t.Fatal("flattened chain differs")
	}
	vhdOK(t, "merge", top)
	if _, err := os.Stat(top); !os.IsNotExist(err) {
		t.Errorf("merged top still exists: %v", err)
	}
	if got := rawOf(t, base, filepath.Join(dir, "out.raw")); !bytes.Equal(got, model) {
		t.Fatal("base differs after the merge")
	}

	vhdOK(t, "compact", base)
	vhdOK(t, "resize", "--size", "20M", base)
	if got := qemuVirtualSize(t, base, "vpc"); got != 20<<20 {
		t.Errorf("qemu-img sees %d bytes after resize", got)
	}
	vhdCode(t, 2, "resize", "--size", "4M", base)             // a shrink must be asked for
	vhdCode(t, 1, "resize", "--size", "4M", "--shrink", base) // and is refused: data past 4M
	vhdCode(t, 2, "resize", base)
	got := rawOf(t, base, filepath.Join(dir, "out.raw"))
	if !bytes.Equal(got[:size], model) || !bytes.Equal(got[size:], make([]byte, 8<<20)) {
		t.Fatal("base differs after compact and resize")
	}
	checkOK(t, base)
	checkOK(t, filepath.Join(dir, "flat.vhd"))
}

// TestCompactNeverPrintsANegativeCount (item 7 of issue 15): compacting a
// blktap image that has nothing to give back makes a file the host gives
// 4 KiB more (its first block aligned, where blktap packs it with the
// metadata); vhd compact printed "reclaimed 0 B (-4096 bytes)".
func TestCompactNeverPrintsANegativeCount(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "x.vhd")
	blktap.Util(t, "create", "-n", img, "-s", "16")
	blktap.Write(t, img, 0, bytes.Repeat([]byte{1}, 2<<20))
	r := vhdOK(t, "compact", "--no-progress", img)
	if regexp.MustCompile(`\(-[0-9]+ bytes\)|reclaimed -`).MatchString(r.stdout) {
		t.Fatalf("vhd compact printed a negative count: %s", r.stdout)
	}
	var res struct {
		HostBefore int64 `json:"host_bytes_before"`
		HostAfter  int64 `json:"host_bytes_after"`
	}
	vhdJSON(t, &res, "compact", "--json", img)
	t.Logf("%s(host bytes %d -> %d)", r.stdout, res.HostBefore, res.HostAfter)
	checkOK(t, img)
	blktap.Check(t, img)
}
