package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/chains"
)

// interruptMerge starts `vhd merge args...`, stops the process as soon as
// the merge journal of child appears (the target is about to be written),
// sends it Ctrl-C (SIGINT) and lets it go on: it must stop half-way.
func interruptMerge(t *testing.T, child string, args ...string) result {
	t.Helper()
	cmd := exec.Command(vhdBin, append([]string{"merge"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !fileExists(child + ".merging") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no merge journal after 30 s: %s", errb.String())
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGSTOP)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Process.Signal(syscall.SIGCONT)
	err := cmd.Wait()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	}
	return r
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestMergeInterruptedSaysSo: after Ctrl-C in `vhd merge --into base
// l2`, merge itself, tree, info and every open of a layer of that chain
// say the merge was interrupted and which command finishes it; none says
// "nothing was left half-done" or suggests --accept-modified-parent (as
// they did before: the target is half-written and the journal is there).
// Running the merge again finishes it.
func TestMergeInterruptedSaysSo(t *testing.T) {
	dir := t.TempDir()
	base, l1, l2 := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "l1.vhd"), filepath.Join(dir, "l2.vhd")
	vhdOK(t, "create", "--size", "96M", base)
	vhdOK(t, "snapshot", base, l1)
	model := make([]byte, 96<<20)
	writeThroughChain(t, l1, model, 1)
	vhdOK(t, "snapshot", l1, l2)
	c, err := chains.Open(l2, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{0x5a, 1, 2, 3}, 16<<20) // 64 MiB to copy
	if _, err := c.WriteAt(big, 16<<20); err != nil {
		t.Fatal(err)
	}
	copy(model[16<<20:], big)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	r := interruptMerge(t, l2, "--into", base, l2)
	finish := "run `vhd merge " + l2 + "` again to finish"
	if r.code != exitFailed || !strings.Contains(r.stderr, "merge interrupted") || !strings.Contains(r.stderr, finish) || strings.Contains(r.stderr, "nothing was left half-done") {
		t.Fatalf("merge interrupted by Ctrl-C:\n%s", r)
	}
	truthful := func(what, out string) {
		t.Helper()
		if !strings.Contains(out, "merge interrupted") || !strings.Contains(out, finish) || strings.Contains(out, "accept-modified-parent") {
			t.Errorf("%s does not say the merge is unfinished and how to finish it:\n%s", what, out)
		}
	}
	truthful("tree", vhdOK(t, "tree", dir).stdout)
	var forest []*chains.Node
	vhdJSON(t, &forest, "tree", "--json", dir)
	if b, _ := json.Marshal(forest); strings.Count(string(b), finish) != 3 {
		t.Errorf("tree --json does not mark base and l2 (merge_interrupted) and l1 (broken link) with the command that finishes the merge:\n%s", b)
	}
	for _, p := range []string{base, l1, l2} {
		truthful("info "+p, vhdOK(t, "info", p).stdout)
		truthful("convert of "+p, vhdCode(t, exitFailed, "convert", "--to", "raw", p, filepath.Join(dir, "x.raw")).stderr)
	}

	vhdOK(t, "merge", l2) // finishes it
	for _, p := range []string{l1, l2, l2 + ".merging", base + ".merge-target"} {
		if fileExists(p) {
			t.Errorf("%s still there after the merge finished", p)
		}
	}
	if r := vhdOK(t, "tree", dir); strings.Contains(r.stdout, "MERGE") || strings.Contains(r.stdout, "BROKEN") {
		t.Errorf("tree after the merge finished:\n%s", r)
	}
	if got := rawOf(t, base, filepath.Join(dir, "out.raw")); !bytes.Equal(got, model) {
		t.Fatal("base differs from the merged chain")
	}
	checkOK(t, base)
}

// TestMergeMovesChildrenAndRefusesToOrphan: base <- l1 <- {l2, l2b}.
// `merge --into base l2` would delete l1, which l2b needs: refused,
// naming l2b, in one line without Go list brackets. `merge l1` moves l2
// and l2b onto base and says so. Before the fix both succeeded and left
// l2b (and, in the second, l2) without a parent.
func TestMergeMovesChildrenAndRefusesToOrphan(t *testing.T) {
	dir := t.TempDir()
	base, l1, l2, l2b := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "l1.vhd"), filepath.Join(dir, "l2.vhd"), filepath.Join(dir, "l2b.vhd")
	vhdOK(t, "create", "--size", "8M", base)
	vhdOK(t, "snapshot", base, l1)
	vhdOK(t, "snapshot", l1, l2)
	vhdOK(t, "create", "--type", "differencing", "--parent", l1, l2b)
	m2, m2b := make([]byte, 8<<20), make([]byte, 8<<20)
	writeThroughChain(t, l2, m2, 1)
	writeThroughChain(t, l2b, m2b, 2)

	r := vhdCode(t, exitFailed, "merge", "--into", base, l2)
	if !strings.Contains(r.stderr, l2b) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 || strings.ContainsAny(r.stderr, "[]") {
		t.Errorf("merge that would orphan l2b:\n%s", r)
	}
	r = vhdOK(t, "merge", l1)
	if !strings.Contains(r.stdout, "moved onto "+base+": "+l2+", "+l2b) {
		t.Errorf("merge of the middle layer:\n%s", r)
	}
	for p, m := range map[string][]byte{l2: m2, l2b: m2b} {
		if got := rawOf(t, p, filepath.Join(dir, "out.raw")); !bytes.Equal(got, m) {
			t.Errorf("%s reads differently after its parent was merged", p)
		}
	}
	for _, p := range []string{base, l2, l2b} {
		checkOK(t, p)
	}
}
