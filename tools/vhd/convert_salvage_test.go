package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
)

// TestConvertSalvage: a differencing child cut short (a copy that did
// not finish) over a sound parent. convert, check and qemu-img refuse
// it; check points at --salvage; convert --salvage copies it: the
// child's data up to the cut, the parent's data where the child's
// blocks were lost, and it lists those ranges (text and JSON). The
// damaged child is not changed; the copy passes check.
func TestConvertSalvage(t *testing.T) {
	need(t, "qemu-img")
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	vhdOK(t, "create", "--size", "16M", "--block-size", "1M", base)
	writeChain(t, base, bytes.Repeat([]byte{0xba}, 16<<20), 0)
	vhdOK(t, "snapshot", base, child)
	writeChain(t, child, bytes.Repeat([]byte{0xc1}, 6<<20), 2<<20) // blocks 2..7
	img, err := engine.Open(child, engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	tableOff := int64(img.Header().TableOffset)
	img.Close()
	blk5 := batEntryOf(t, child, tableOff, 5)
	cut := blk5 + 512 + 100<<10 // block 5's bitmap and 100 KiB of its data
	if err := os.Truncate(child, cut); err != nil {
		t.Fatal(err)
	}
	sum := fileSum(t, child)

	out := filepath.Join(dir, "out.vhd")
	if r := vhd(t, "convert", "--to", "dynamic", child, out); r.code != 1 || !strings.Contains(r.stderr, "runs past the data area") || !strings.Contains(r.stderr, "'vhd convert --salvage IMAGE COPY'") {
		t.Errorf("convert of the cut child: want exit 1 naming the damage and --salvage; got %s", r)
	}
	if r := vhdCode(t, 3, "check", child); !strings.Contains(r.stdout, "--salvage") {
		t.Errorf("check does not point at convert --salvage:\n%s", r)
	}
	if b, err := exec.Command("qemu-img", "convert", "-f", "vpc", "-O", "raw", child, filepath.Join(dir, "q.raw")).CombinedOutput(); err == nil {
		t.Errorf("qemu-img converted the cut child (the docs say it refuses):\n%s", b)
	}
	vhdCode(t, 2, "convert", "--to", "dynamic", "--salvage", "--from", "raw", child, out)

	r := vhdCode(t, exitProblems, "convert", "--to", "dynamic", "--salvage", child, out) // 3: copied, with losses
	if !strings.Contains(r.stdout, "could not be read") || !strings.Contains(r.stdout, "what the layers below hold") || !strings.Contains(r.stdout, "past the end of the file") {
		t.Errorf("salvage output:\n%s", r.stdout)
	}
	want := bytes.Repeat([]byte{0xba}, 16<<20)
	copy(want[2<<20:5<<20+100<<10], bytes.Repeat([]byte{0xc1}, 3<<20+100<<10))
	if got := rawOf(t, out, filepath.Join(dir, "out.raw")); !bytes.Equal(got, want) {
		t.Fatalf("the salvaged copy differs from the child up to the cut and the parent past it, at byte %d", firstDiffAt(got, want))
	}
	checkOK(t, out)

	var res struct {
		Lost []struct {
			Layer  string `json:"layer"`
			Offset int64  `json:"offset"`
			Length int64  `json:"length"`
		} `json:"lost"`
		LostBytes int64 `json:"lost_bytes"`
	}
	os.Remove(out)
	vhdJSONCode(t, exitProblems, &res, "convert", "--json", "--to", "dynamic", "--salvage", child, out)
	if res.LostBytes != 8<<20-(5<<20+100<<10) || len(res.Lost) == 0 || res.Lost[0].Layer != child || res.Lost[0].Offset != 5<<20+100<<10 {
		t.Errorf("--json: %+v, want %d bytes lost from %d in %s", res, 8<<20-(5<<20+100<<10), 5<<20+100<<10, child)
	}
	if fileSum(t, child) != sum {
		t.Error("salvage changed the damaged child")
	}
	checkOK(t, base)

	// Nothing to salvage: a header cut in two (refused, saying so, not
	// offering check and repair), an empty file (no VHD left in it), a
	// VHD cut below a footer's size (a VHD, not a raw disk).
	for name, n := range map[string]int{"header-cut.vhd": 1000, "empty.vhd": 0, "short.vhd": 400} {
		p := filepath.Join(dir, name)
		b, _ := os.ReadFile(base)
		os.WriteFile(p, b[:n], 0o644)
		r := vhdCode(t, 1, "convert", "--to", "raw", "--salvage", p, filepath.Join(dir, name+".raw"))
		if !strings.Contains(r.stderr, "salvage") || strings.Contains(r.stderr, "vhd repair") {
			t.Errorf("salvage of %s (%d bytes): %s", name, n, r)
		}
		if n == 400 {
			if r := vhdCode(t, 1, "convert", "--to", "raw", p, filepath.Join(dir, name+".raw")); !strings.Contains(r.stderr, "too short") {
				t.Errorf("convert of a VHD cut to 400 bytes made a raw disk of it: %s", r)
			}
		}
	}
}

// batEntryOf reads block b's file offset from the BAT at tableOff.
func batEntryOf(t *testing.T, path string, tableOff int64, b int) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var e [4]byte
	if _, err := f.ReadAt(e[:], tableOff+4*int64(b)); err != nil {
		t.Fatal(err)
	}
	return int64(binary.BigEndian.Uint32(e[:])) * 512
}

func firstDiffAt(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestSalvageTakesTheSoundParent: a copy of a chain whose parent copy is
// cut short, next to the child, while the child's absolute locator still
// leads to the sound original. A plain convert skips the damaged copy
// and reads the sound parent; --salvage must do the same (it used to
// salvage the damaged copy, losing 7 MiB a plain convert did not).
func TestSalvageTakesTheSoundParent(t *testing.T) {
	dir, copies := t.TempDir(), t.TempDir()
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	vhdOK(t, "create", "--size", "16M", "--block-size", "1M", base)
	writeChain(t, base, bytes.Repeat([]byte{0xba}, 12<<20), 0)
	vhdOK(t, "snapshot", base, child)
	writeChain(t, child, bytes.Repeat([]byte{0xc1}, 1<<20), 4<<20)
	for _, f := range []string{"base.vhd", "child.vhd"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "base.vhd" {
			b = b[:7<<20] // the copy of the parent cut short
		}
		if err := os.WriteFile(filepath.Join(copies, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plain, salvaged := filepath.Join(copies, "plain.raw"), filepath.Join(copies, "salvaged.raw")
	vhdOK(t, "convert", "--to", "raw", filepath.Join(copies, "child.vhd"), plain)
	r := vhdOK(t, "convert", "--to", "raw", "--salvage", filepath.Join(copies, "child.vhd"), salvaged)
	if !strings.Contains(r.stdout, "nothing is lost") {
		t.Errorf("salvage with a sound parent reachable: %s", r)
	}
	a, _ := os.ReadFile(plain)
	b, _ := os.ReadFile(salvaged)
	if !bytes.Equal(a, b) {
		t.Errorf("salvage read other data than a plain convert (first difference at %d)", firstDiffAt(a, b))
	}
	checkOK(t, child)
}
