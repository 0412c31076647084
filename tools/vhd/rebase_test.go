package main

import (
	"path/filepath"
	"strings"
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
