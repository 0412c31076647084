package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestDidYouMean(t *testing.T) {
	for in, want := range map[string]string{
		"conver": "vhd convert", "commit": "vhd merge", "reabse": "vhd rebase", "Dismount": "vhd umount",
		"meas": "vhd measure", "flatten": "vhd convert", "snapshoot": "vhd snapshot",
		"sethduuid": "vhd reset-id", "set-uuid": "vhd reset-id", "set-id": "vhd reset-id",
	} {
		r := vhdCode(t, 2, in)
		if !strings.Contains(r.stderr, "did you mean '"+want+"'") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("vhd %s: want one line with did you mean '%s':\n%s", in, want, r.stderr)
		}
	}
	r := vhdCode(t, 2, "xyzzy")
	if strings.Contains(r.stderr, "did you mean") || !strings.Contains(r.stderr, "compare, map, measure") {
		t.Errorf("vhd xyzzy: no suggestion, the list:\n%s", r.stderr)
	}
	r = vhdCode(t, 2, "help", "nosuch")
	for _, c := range commands {
		if !strings.Contains(r.stderr, c.name) {
			t.Errorf("vhd help nosuch does not list %s:\n%s", c.name, r.stderr)
		}
	}
}

// TestQemuSpellings runs qemu-img's spellings through vhd: those with one
// meaning work, the others are answered with the vhd spelling.
func TestQemuSpellings(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	vhdOK(t, "create", p("pos.vhd"), "10M")
	vhdOK(t, "create", "-f", "vpc", "-o", "subformat=fixed,force_size=on", p("fixed.vhd"), "10M")
	var info struct {
		Type        string `json:"type"`
		VirtualSize int64  `json:"virtual_size"`
	}
	vhdJSON(t, &info, "info", "-f", "vpc", "--output=json", p("fixed.vhd"))
	if info.Type != "fixed" || info.VirtualSize != 10<<20 {
		t.Errorf("create -f vpc -o subformat=fixed FILE 10M made %+v", info)
	}
	vhdJSON(t, &info, "info", "--output", "json", p("pos.vhd"))
	if info.Type != "dynamic" || info.VirtualSize != 10<<20 {
		t.Errorf("create FILE 10M made %+v", info)
	}
	raw := p("src.raw")
	makeRaw(t, raw, 4<<20, region{off: 4096, n: 8192})
	vhdOK(t, "convert", "-p", "-f", "raw", "-O", "vpc", raw, p("dyn.vhd"))
	vhdJSON(t, &info, "info", "--json", p("dyn.vhd"))
	if info.Type != "dynamic" {
		t.Errorf("convert -O vpc made a %s VHD", info.Type)
	}
	if r := vhdOK(t, "convert", "-q", "-O", "vpc", "-o", "subformat=fixed", raw, p("fix2.vhd")); r.stdout != "" || r.stderr != "" {
		t.Errorf("convert -q printed: %s", r)
	}
	vhdJSON(t, &info, "info", "--json", p("fix2.vhd"))
	if info.Type != "fixed" {
		t.Errorf("convert -O vpc -o subformat=fixed made a %s VHD", info.Type)
	}
	if r := vhdOK(t, "check", "-q", p("fix2.vhd")); r.stdout != "" {
		t.Errorf("check -q printed: %s", r)
	}
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"create", "-f", "raw", p("r.img"), "1M"}, "truncate -s"},
		{[]string{"info", "-f", "raw", p("pos.vhd")}, "raw disks are read by convert"},
		{[]string{"info", "-f", "qcow2", p("pos.vhd")}, "qemu-img convert -O vpc"},
		{[]string{"info", "-p", p("pos.vhd")}, "shows no progress"},
		{[]string{"info", "-O", "raw", p("pos.vhd")}, "only convert and measure"},
		{[]string{"info", "--output=xml", p("pos.vhd")}, "--json"},
		{[]string{"create", "-o", "cluster_size=64k", p("c.vhd"), "1M"}, "--block-size SIZE"},
		{[]string{"create", "-o", "lazy_refcounts=on", p("c.vhd"), "1M"}, "no such option"},
		{[]string{"convert", "-O", "vpc", "-o", "subformat=stream", raw, p("s.vhd")}, "--to fixed|dynamic"},
	} {
		r := vhdCode(t, 2, c.args...)
		if !strings.Contains(r.stderr, c.says) {
			t.Errorf("vhd %v: want %q in:\n%s", c.args, c.says, r.stderr)
		}
	}
	for _, f := range []string{"pos.vhd", "fixed.vhd", "dyn.vhd", "fix2.vhd"} {
		checkOK(t, p(f))
	}
}

// TestQemuSpellingsKeepValues: a value of the command's own flag that
// looks like a qemu-img flag (run --qemu-arg -p) is left alone, and so is
// a flag the command declares itself (compare's -f, convert's -O).
func TestQemuSpellingsKeepValues(t *testing.T) {
	for _, c := range []struct {
		cmd  string
		args []string
	}{
		{"run", []string{"--qemu-arg", "-p", "--qemu-arg", "-f", "--disk", "x"}},
		{"compare", []string{"-f", "raw", "-F", "vpc", "a", "b"}},
		{"convert", []string{"-O", "raw", "-f", "raw", "a", "b"}},
		{"info", []string{"--", "-q"}},
	} {
		cmd := lookup(c.cmd)
		fs := newFlagSet(cmd)
		cmd.setup(fs)
		got, quiet, err := qemuSpellings(cmd, fs, c.args)
		if err != nil || quiet || !slices.Equal(got, c.args) {
			t.Errorf("%s %v: rewritten to %v (quiet %v, %v)", c.cmd, c.args, got, quiet, err)
		}
	}
}

// TestQemuResizeOrder: qemu-img resize FILE [+|-]SIZE works as vhd resize
// --size; a bare negative SIZE (read as a flag) is answered with --.
func TestQemuResizeOrder(t *testing.T) {
	img := filepath.Join(t.TempDir(), "d.vhd")
	vhdOK(t, "create", "--size", "16M", img)
	vhdOK(t, "resize", img, "32M")
	vhdOK(t, "resize", img, "+16M")
	if r := vhdCode(t, exitUsage, "resize", img, "-16M"); !strings.Contains(r.stderr, "after --") {
		t.Errorf("resize IMAGE -16M: %s", r)
	}
	vhdOK(t, "resize", "--", img, "-16M")
	var info struct {
		Size int64 `json:"virtual_size"`
	}
	vhdJSON(t, &info, "info", "--json", img)
	if info.Size != 32<<20 {
		t.Errorf("after 32M, +16M, -16M: %d bytes", info.Size)
	}
	vhdCode(t, exitUsage, "resize", "--size", "8M", img, "8M")
	checkOK(t, img)
}
