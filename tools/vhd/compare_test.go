package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// diskMaker makes a disk of one kind from a raw file, returning its path
// and the -f name qemu-img reads it with.
type diskMaker struct {
	name string
	make func(t *testing.T, raw, dst string)
	qemu string
}

// diskMakers are the kinds compare and map are checked on: raw files and
// fixed and dynamic VHDs made by both tools.
var diskMakers = []diskMaker{
	{"raw", func(t *testing.T, raw, dst string) { runPeer(t, "cp", "--sparse=always", raw, dst) }, "raw"},
	{"vhd-dynamic", func(t *testing.T, raw, dst string) { vhdOK(t, "convert", "--to", "dynamic", raw, dst) }, "vpc"},
	{"vhd-fixed", func(t *testing.T, raw, dst string) { vhdOK(t, "convert", "--to", "fixed", raw, dst) }, "vpc"},
	{"qemu-dynamic", func(t *testing.T, raw, dst string) {
		qemuImg(t, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", raw, dst)
	}, "vpc"},
	{"qemu-fixed", func(t *testing.T, raw, dst string) {
		qemuImg(t, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", raw, dst)
	}, "vpc"},
}

// qemuCompare runs qemu-img compare and returns its exit status and output.
func qemuCompare(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command("qemu-img", append([]string{"compare"}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	case err != nil:
		t.Fatalf("qemu-img compare %v: %v", args, err)
	}
	return 0, string(out)
}

// agree runs both tools on a and b and fails unless they give the same
// exit status and the same lines (the first differing offset included).
func agree(t *testing.T, a, b string, fa, fb string, strict bool, want int) {
	t.Helper()
	qargs := []string{"-f", fa, "-F", fb}
	vargs := []string{"compare", "-f", fa, "-F", fb}
	if strict {
		qargs, vargs = append(qargs, "-s"), append(vargs, "-s")
	}
	qcode, qout := qemuCompare(t, append(qargs, a, b)...)
	r := vhd(t, append(vargs, a, b)...)
	if qcode != want || r.code != qcode || r.stdout != qout {
		t.Errorf("%s vs %s: qemu-img compare exit %d (want %d):\n%svhd compare: %s", filepath.Base(a), filepath.Base(b), qcode, want, qout, r)
	}
}

// compareCase is a pair of raw disks and what comparing them gives.
type compareCase struct {
	name   string
	a, b   func(t *testing.T, path string) // make the raw disk
	strict bool
	want   int
}

func TestCompareAgreesWithQemuImg(t *testing.T) {
	const size = 8 << 20
	base := func(t *testing.T, p string) {
		makeRaw(t, p, size, region{off: 1 << 20, n: 640 << 10}, region{off: 5 << 20, n: 4096}, region{off: 6 << 20, n: 8192, zeros: true})
	}
	poke := func(off int64, v byte, grow int64) func(*testing.T, string) {
		return func(t *testing.T, p string) {
			base(t, p)
			pokeFile(t, p, off, v, grow)
		}
	}
	for _, c := range []compareCase{
		{name: "same", a: base, b: base},
		{name: "byte in data", a: base, b: poke(1<<20+300_001, 0x5a, 0), want: 1},
		{name: "byte in a hole", a: base, b: poke(3<<20+777, 1, 0), want: 1},
		{name: "byte in the last sector", a: base, b: poke(size-1, 7, 0), want: 1},
		{name: "larger, zeros past the end", a: base, b: poke(0, 0, 1<<20)},
		{name: "larger, data past the end", a: base, b: poke(size+4096+17, 9, 1<<20), want: 1},
		{name: "larger, strict", a: base, b: poke(0, 0, 1<<20), strict: true, want: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			rawA, rawB := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw")
			c.a(t, rawA)
			c.b(t, rawB)
			var as, bs []string
			for _, m := range diskMakers {
				pa, pb := filepath.Join(dir, "a-"+m.name), filepath.Join(dir, "b-"+m.name)
				m.make(t, rawA, pa)
				m.make(t, rawB, pb)
				as, bs = append(as, pa), append(bs, pb)
			}
			for i, ma := range diskMakers {
				for j, mb := range diskMakers {
					agree(t, as[i], bs[j], ma.qemu, mb.qemu, c.strict, c.want)
				}
			}
			for i, m := range diskMakers {
				if m.qemu == "vpc" {
					checkOK(t, as[i])
					checkOK(t, bs[i])
				}
			}
		})
	}
}

// pokeFile writes v at off, after growing the file by grow bytes.
func pokeFile(t *testing.T, path string, off int64, v byte, grow int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if grow > 0 {
		st, _ := f.Stat()
		if err := f.Truncate(st.Size() + grow); err != nil {
			t.Fatal(err)
		}
	}
	if v != 0 {
		if _, err := f.WriteAt([]byte{v}, off); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCompareChains compares differencing chains, which qemu-img reads
// without their parents: vhd compare of the chain must agree with
// qemu-img compare of the chain flattened to a raw file.
func TestCompareChains(t *testing.T) {
	dir := t.TempDir()
	const size = 8 << 20
	raw := filepath.Join(dir, "model.raw")
	model := makeRaw(t, raw, size, region{off: 2 << 20, n: 1 << 20})
	for _, bm := range diskMakers[1:] {
		t.Run(bm.name, func(t *testing.T) {
			d := t.TempDir()
			base, top, flat, other := filepath.Join(d, "base.vhd"), filepath.Join(d, "top.vhd"), filepath.Join(d, "flat.raw"), filepath.Join(d, "other.raw")
			bm.make(t, raw, base)
			vhdOK(t, "snapshot", base, top)
			m := bytes.Clone(model)
			writeThroughChain(t, top, m, 7)
			if err := os.WriteFile(other, m, 0o644); err != nil {
				t.Fatal(err)
			}
			rawOf(t, top, flat)
			agreeFlat(t, top, flat, other, 0)
			pokeFile(t, other, 5<<20+1234, 0xee, 0) // where the base holds nothing
			agreeFlat(t, top, flat, other, 1)
			if err := os.WriteFile(other, m, 0o644); err != nil {
				t.Fatal(err)
			}
			pokeFile(t, other, 2<<20+4095, m[2<<20+4095]^1, 0) // in the base's data
			agreeFlat(t, top, flat, other, 1)
			checkOK(t, top)
		})
	}
}

// agreeFlat compares chain with other by vhd, flat (the chain as a raw
// file) with other by qemu-img, and wants the same answer.
func agreeFlat(t *testing.T, chain, flat, other string, want int) {
	t.Helper()
	qcode, qout := qemuCompare(t, "-f", "raw", "-F", "raw", flat, other)
	r := vhd(t, "compare", chain, other)
	if qcode != want || r.code != want || r.stdout != qout {
		t.Errorf("qemu-img compare of the flattened chain: exit %d (want %d)\n%svhd compare of the chain: %s", qcode, want, qout, r)
	}
}

func TestCompareErrors(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.raw")
	makeRaw(t, a, 1<<20)
	qcow := filepath.Join(dir, "d.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", qcow, "1M")
	for _, args := range [][]string{
		{"compare", a, filepath.Join(dir, "nosuch")},
		{"compare", a, qcow},
		{"compare", a},
		{"compare", "-f", "qcow2", a, a},
	} {
		r := vhdCode(t, 2, args...)
		if r.stdout != "" || r.stderr == "" {
			t.Errorf("vhd %v: an error goes to stderr only: %s", args, r)
		}
	}
	vhdCode(t, 0, "compare", "-q", a, a)
	if r := vhdOK(t, "compare", "-q", a, a); r.stdout != "" {
		t.Errorf("vhd compare -q printed: %s", r)
	}
}
