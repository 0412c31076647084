package main

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRebaseCommand moves the top of a chain onto its grandparent and
// onto an unrelated image: vhd compare says it reads as before.
func TestRebaseCommand(t *testing.T) {
	dir := t.TempDir()
	const size = 8 << 20
	raw := filepath.Join(dir, "base.raw")
	model := makeRaw(t, raw, size, region{off: 1 << 20, n: 2 << 20})
	base, mid, top := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "mid.vhd"), filepath.Join(dir, "top.vhd")
	vhdOK(t, "convert", "--to", "dynamic", raw, base)
	vhdOK(t, "snapshot", base, mid)
	writeThroughChain(t, mid, model, 1)
	vhdOK(t, "snapshot", mid, top)
	writeThroughChain(t, top, model, 2)
	before := filepath.Join(dir, "before.raw")
	rawOf(t, top, before)

	r := vhdCode(t, 1, "rebase", mid, base)
	if !strings.Contains(r.stderr, "depend on") || !strings.Contains(r.stderr, "top.vhd") {
		t.Errorf("rebase of an image with a child: %s", r)
	}
	r = vhdCode(t, 2, "rebase", "-u", top, base)
	if !strings.Contains(r.stderr, "vhd set-parent") {
		t.Errorf("rebase -u does not answer with set-parent: %s", r)
	}

	var res map[string]any
	vhdJSON(t, &res, "rebase", "--json", top, base)
	if res["copied_bytes"].(float64) == 0 || !strings.HasSuffix(res["old_parent"].(string), "mid.vhd") {
		t.Errorf("rebase onto the grandparent: %v", res)
	}
	vhdOK(t, "compare", top, before)

	other := filepath.Join(dir, "other.vhd")
	vhdOK(t, "create", "--size", "8M", other)
	r = vhdOK(t, "rebase", top, "-b", other)
	if !strings.Contains(r.stdout, "reads as before") {
		t.Errorf("rebase -b: %s", r)
	}
	vhdOK(t, "compare", top, before)
	var info struct {
		Parent struct{ Name string }   `json:"parent"`
		Chain  []struct{ File string } `json:"chain"`
	}
	vhdJSON(t, &info, "info", "--json", top)
	if info.Parent.Name != "other.vhd" || len(info.Chain) != 2 {
		t.Errorf("after rebase -b other.vhd: parent %q, chain %v", info.Parent.Name, info.Chain)
	}
	checkOK(t, top)
	checkOK(t, mid)
}

// TestRebaseInterruptedSaysItResumes: Ctrl-C in the middle of a rebase
// says the child still reads as before and that running the command
// again finishes it, which it does. Before, it said "nothing was left
// half-done", while the child kept hundreds of MiB copied into it.
func TestRebaseInterruptedSaysItResumes(t *testing.T) {
	dir := t.TempDir()
	const size = 256 << 20
	raw, base, top, other := filepath.Join(dir, "base.raw"), filepath.Join(dir, "base.vhd"), filepath.Join(dir, "top.vhd"), filepath.Join(dir, "other.vhd")
	makeRaw(t, raw, size, region{off: 0, n: size})
	vhdOK(t, "convert", "--to", "dynamic", raw, base)
	vhdOK(t, "snapshot", base, top)
	vhdOK(t, "create", "--size", "256M", other)

	cmd := exec.Command(vhdBin, "rebase", "--progress", top, other)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var out strings.Builder
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "progress:") && !strings.Contains(sc.Text(), "100") {
			cmd.Process.Signal(syscall.SIGINT)
			break
		}
	}
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
	}
	cmd.Wait()
	if !strings.Contains(out.String(), "vhd rebase: interrupted; "+top+" still reads as before") || !strings.Contains(out.String(), "run the same command again to finish") {
		t.Fatalf("rebase interrupted (exit %d):\n%s", cmd.ProcessState.ExitCode(), out.String())
	}
	vhdOK(t, "compare", top, raw)
	vhdOK(t, "rebase", top, other)
	vhdOK(t, "compare", top, raw)
	checkOK(t, top)
}
