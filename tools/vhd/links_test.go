package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/chains"
)

// vhdIn runs the binary with args in the folder dir.
func vhdIn(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(vhdBin, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	return result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
}

// writeChain writes data at off into the image at path through its chain.
func writeChain(t *testing.T, path string, data []byte, off int64) {
	t.Helper()
	c, err := chains.Open(path, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSetParentToAModifiedParent is the reviewer's case: B/c2.vhd was
// made over A/base.vhd, which a merge of A/c1.vhd then wrote (B is a
// sibling folder the merge's dependents search does not see: a documented
// limit); base is then moved. The tree used to offer a plain 'vhd
// set-parent B/c2.vhd moved.vhd', which linked silently, and c2 then read
// the merged data. Now the tree says moved.vhd was written after c2 was
// made, with both times, and offers only --accept-modified-parent; plain
// set-parent refuses it, naming that flag.
func TestSetParentToAModifiedParent(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 34<<20)
	rng := rand.New(rand.NewPCG(5, 5))
	for i := 0; i < len(data); i += 4096 {
		data[i] = byte(rng.Uint32())
	}
	raw := filepath.Join(dir, "data.raw")
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"A", "B"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	base, c1, c2 := filepath.Join(dir, "A/base.vhd"), filepath.Join(dir, "A/c1.vhd"), filepath.Join(dir, "B/c2.vhd")
	vhdOK(t, "convert", "-q", "--to", "dynamic", raw, base)
	vhdOK(t, "snapshot", base, c1)
	vhdOK(t, "create", "-q", "--type", "differencing", "--parent", base, c2)
	c2raw := filepath.Join(dir, "c2.raw")
	vhdOK(t, "convert", "-q", "--to", "raw", c2, c2raw)
	writeChain(t, c1, bytes.Repeat([]byte{0xa5}, 2<<20), 30<<20)
	vhdOK(t, "merge", c1)
	moved := filepath.Join(dir, "moved.vhd")
	if err := os.Rename(base, moved); err != nil {
		t.Fatal(err)
	}
	out := vhdOK(t, "tree", dir).stdout
	for _, want := range []string{moved + " has that UUID but was written after the child was made (parent time ", ", the child recorded ",
		"its data may differ from what the child was made over", "only if you know its data did not change: vhd set-parent --accept-modified-parent " + c2 + " " + moved} {
		if !strings.Contains(out, want) {
			t.Errorf("tree lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "vhd set-parent "+c2) {
		t.Errorf("tree offers a plain set-parent onto the modified parent:\n%s", out)
	}
	r := vhdCode(t, 1, "set-parent", c2, moved)
	for _, want := range []string{"parent was modified after the child was made", "only if you know the parent's data did not change", "vhd set-parent --accept-modified-parent " + c2 + " " + moved} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("set-parent onto the modified parent does not say %q:\n%s", want, r)
		}
	}
	if r := vhd(t, "info", "--parent-dir", dir, c2); !strings.Contains(r.stdout+r.stderr, "vhd set-parent --accept-modified-parent "+c2+" "+moved) {
		t.Errorf("info of the child does not offer only the explicit choice:\n%s", r)
	}
	vhdOK(t, "set-parent", "--accept-modified-parent", c2, moved)
	vhdCode(t, 1, "compare", c2, c2raw) // what the flag accepted: c2 now reads the merged data
	checkOK(t, c2)
	checkOK(t, moved)
}

// TestSetParentOfItself: naming the child as its own parent said "image
// is in use: another process (or open) has it open for writing".
func TestSetParentOfItself(t *testing.T) {
	dir := t.TempDir()
	base, c := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "c.vhd")
	vhdOK(t, "create", "-q", "-s", "4M", base)
	vhdOK(t, "snapshot", base, c)
	r := vhdCode(t, 1, "set-parent", c, c)
	if !strings.Contains(r.stderr, "an image cannot be its own parent") || strings.Contains(r.stderr, "in use") {
		t.Errorf("set-parent c c:\n%s", r)
	}
	checkOK(t, c)
}

// TestMergeTypeWithoutTo: --type only applies with --to; without it the
// merge went ahead into the parent and deleted CHILD, and '--to dynamic'
// wrote a file named dynamic. Both are usage errors now.
func TestMergeTypeWithoutTo(t *testing.T) {
	dir := t.TempDir()
	base, c := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "c.vhd")
	vhdOK(t, "create", "-q", "-s", "4M", base)
	vhdOK(t, "snapshot", base, c)
	writeChain(t, c, bytes.Repeat([]byte{1}, 4096), 0)
	r := vhdIn(t, dir, "merge", "--type", "fixed", c)
	if r.code != 2 || !strings.Contains(r.stderr, "--type applies to --to NEW.vhd") {
		t.Errorf("merge --type without --to: want exit 2 saying --type applies to --to NEW.vhd, got %s", r)
	}
	if !fileExists(c) {
		t.Fatal("merge --type without --to deleted CHILD")
	}
	for _, f := range []string{"fixed", "dynamic", "raw", "vpc", "vhd"} {
		r := vhdIn(t, dir, "merge", "--to", f, c)
		if r.code != 2 || !strings.Contains(r.stderr, "--to takes the new image's file name (to flatten into a file named '"+f+"', write ./"+f+"); the format is --type") {
			t.Errorf("merge --to %s: want exit 2 saying --to takes a file name, got %s", f, r)
		}
		if fileExists(filepath.Join(dir, f)) {
			t.Errorf("merge --to %s wrote a file named %s", f, f)
		}
	}
	vhdOK(t, "merge", "--to", filepath.Join(dir, "dynamic"), "--type", "fixed", c)
	checkOK(t, filepath.Join(dir, "dynamic"))
	checkOK(t, c)
	checkOK(t, base)
}

// TestCopyOfAParentHasNoDependents is the reviewer's case: child.vhd
// records orig.vhd's UUID, which copy.vhd shares, but its link leads to
// orig.vhd. Resizing the copy was refused: "copy.vhd: other differencing
// images depend on this image: child.vhd".
func TestCopyOfAParentHasNoDependents(t *testing.T) {
	dir := t.TempDir()
	orig, child, cp := filepath.Join(dir, "orig.vhd"), filepath.Join(dir, "child.vhd"), filepath.Join(dir, "copy.vhd")
	vhdOK(t, "create", "-q", "-s", "64M", orig)
	vhdOK(t, "snapshot", orig, child)
	copyFile(t, orig, cp)
	vhdOK(t, "resize", "-s", "128M", cp)
	r := vhdCode(t, 1, "resize", "-s", "128M", orig)
	if !strings.Contains(r.stderr, "depend on this image: "+child) {
		t.Errorf("resize of the original does not name its child:\n%s", r)
	}
	vhdOK(t, "convert", "-q", "--force", "--to", "dynamic", child, cp)
	checkOK(t, cp)
	checkOK(t, orig)
	checkOK(t, child)
}

// TestConvertOntoItselfSaysSameFile: 'vhd convert --force d1.vhd d1.vhd'
// reported d1's dependents before noticing SRC and DST are one file.
func TestConvertOntoItselfSaysSameFile(t *testing.T) {
	dir := t.TempDir()
	d1, c := filepath.Join(dir, "d1.vhd"), filepath.Join(dir, "c.vhd")
	vhdOK(t, "create", "-q", "-s", "4M", d1)
	vhdOK(t, "snapshot", d1, c)
	r := vhdCode(t, 1, "convert", "--force", "--to", "dynamic", d1, d1)
	if !strings.Contains(r.stderr, "source and destination are the same file") || strings.Contains(r.stderr, "depend") {
		t.Errorf("convert --force onto itself:\n%s", r)
	}
	checkOK(t, d1)
	checkOK(t, c)
}
