package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/chains"
	"vhdkit/engine"
)

// TestTreeListsCycles: two images that are each other's parent are
// listed as broken by a cycle, as text and as JSON. Before the fix tree
// printed "no images" for them (and [] as JSON).
func TestTreeListsCycles(t *testing.T) {
	dir := t.TempDir()
	a, b := engine.NewUUID(), engine.NewUUID()
	for _, l := range []struct {
		name         string
		self, parent engine.UUID
		parentName   string
	}{{"a.vhd", a, b, "b.vhd"}, {"b.vhd", b, a, "a.vhd"}} {
		img, err := engine.Create(filepath.Join(dir, l.name), engine.CreateOptions{Type: engine.TypeDifferencing, Size: 1 << 20, UUID: l.self,
			Parent: &engine.ParentInfo{UUID: l.parent, Name: l.parentName}})
		if err != nil {
			t.Fatal(err)
		}
		img.Close()
	}
	r := vhdOK(t, "tree", dir)
	if strings.Contains(r.stdout, "no images") || strings.Count(r.stdout, "[BROKEN: differencing chain has a cycle") != 2 {
		t.Errorf("tree of a folder with a cycle:\n%s", r)
	}
	var forest []*chains.Node
	vhdJSON(t, &forest, "tree", "--json", dir)
	if len(forest) != 2 || !strings.Contains(forest[0].Broken, "cycle") || !strings.Contains(forest[1].Broken, "cycle") {
		t.Errorf("tree --json: %+v; want a and b, both broken by a cycle", forest)
	}
}

// TestTreeShowsWhatItTried: a child whose parent was renamed is shown
// with where its parent was looked for and the set-parent that re-links
// it to the renamed file, which, run as printed, mends the tree. Before,
// the tree printed "[BROKEN: parent not found: CHILD: parent not found
// (...); tried:]" and nothing after.
func TestTreeShowsWhatItTried(t *testing.T) {
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	vhdOK(t, "create", "--size", "1M", base)
	vhdOK(t, "snapshot", base, child)
	renamed := filepath.Join(dir, "renamed.vhd")
	if err := os.Rename(base, renamed); err != nil {
		t.Fatal(err)
	}
	out := vhdOK(t, "tree", dir).stdout
	fix := "vhd set-parent " + child + " " + renamed
	for _, want := range []string{child + " (differencing, 1.0 MiB (1048576 bytes)) [BROKEN: parent not found]\n", "    tried " + base + " (W2ru locator, W2ku locator, MacX locator, parent name): no such file\n", "has that UUID: " + fix + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("tree lacks %q:\n%s", want, out)
		}
	}
	vhdOK(t, strings.Fields(fix)[1:]...)
	if out := vhdOK(t, "tree", dir).stdout; strings.Contains(out, "BROKEN") || !strings.Contains(out, "└── "+child) {
		t.Errorf("after the printed set-parent, tree still shows a broken link:\n%s", out)
	}
	vhdOK(t, "check", child)
}

// TestSuggestedSetParentPastes: in a folder whose name has a space, the
// set-parent command tree prints runs as printed through the shell and
// mends the link. Before, the paths were not quoted, and the pasted
// command failed with 'unexpected argument'.
func TestSuggestedSetParentPastes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "my disks")
	os.Mkdir(dir, 0o755)
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	vhdOK(t, "create", "--size", "1M", base)
	vhdOK(t, "snapshot", base, child)
	moved := filepath.Join(dir, "moved base.vhd")
	if err := os.Rename(base, moved); err != nil {
		t.Fatal(err)
	}
	out := vhdOK(t, "tree", dir).stdout
	i := strings.Index(out, "has that UUID: vhd set-parent ")
	if i < 0 {
		t.Fatalf("no set-parent suggested:\n%s", out)
	}
	line := out[i+len("has that UUID: vhd "):]
	line = line[:strings.IndexByte(line, '\n')]
	if o, err := exec.Command("bash", "-c", shellQuoteWord(vhdBin)+" "+line).CombinedOutput(); err != nil {
		t.Fatalf("the suggested 'vhd %s' failed: %v\n%s", line, err, o)
	}
	vhdOK(t, "check", child)
}

func shellQuoteWord(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
