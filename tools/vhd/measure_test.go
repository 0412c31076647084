package main

import (
	"os"
	"path/filepath"
	"testing"
)

func fileLen(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

type measureJSON struct {
	Required       int64 `json:"required"`
	FullyAllocated int64 `json:"fully_allocated"`
	VirtualSize    int64 `json:"virtual_size"`
}

// TestMeasureMatchesConvert: the required size vhd measure gives is the
// length of the file vhd convert then writes, for fixed and dynamic VHDs,
// several block sizes and alignments, raw sources, VHDs and a chain (a
// flatten); the fully allocated size is that of a disk full of data.
// With 512-byte blocks it is an upper bound (see below).
func TestMeasureMatchesConvert(t *testing.T) {
	dir := t.TempDir()
	const size = 13<<20 + 3*512 // not a whole number of blocks
	sparse := filepath.Join(dir, "sparse.raw")
	model := makeRaw(t, sparse, size, region{off: 1 << 20, n: 4096}, region{off: 5<<20 - 512, n: 8192}, region{off: size - 1024, n: 1024})
	full := filepath.Join(dir, "full.raw")
	makeRaw(t, full, size, region{off: 0, n: size})
	base, top := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "top.vhd")
	vhdOK(t, "convert", "--to", "dynamic", sparse, base)
	vhdOK(t, "snapshot", base, top)
	writeThroughChain(t, top, model, 3)
	for _, src := range []string{sparse, full, base, top} {
		for _, opts := range [][]string{
			{"--to", "dynamic"},
			{"--to", "dynamic", "--block-size", "512K"},
			{"--to", "dynamic", "--block-size", "4K"},
			{"--to", "dynamic", "--block-size", "512"},
			{"--to", "dynamic", "--align", "1M"},
			{"--to", "fixed"},
			{"--to", "fixed", "--align", "1M"},
		} {
			out := filepath.Join(dir, "out.vhd")
			os.Remove(out)
			var m measureJSON
			vhdJSON(t, &m, append(append([]string{"measure", "--json"}, opts...), "--image", src)...)
			vhdOK(t, append(append([]string{"convert"}, opts...), src, out)...)
			// Blocks smaller than a host file's 4 KiB extents hold zeros
			// the extent map calls data, which convert skips: measure
			// says at most what convert writes, exactly otherwise.
			got := fileLen(t, out)
			if opts[len(opts)-1] == "512" && m.Required >= got {
				got = m.Required
			}
			if m.Required != got {
				t.Errorf("measure %v %s: required %d, convert wrote %d bytes", opts, filepath.Base(src), m.Required, got)
			}
			if src == full && m.FullyAllocated != m.Required {
				t.Errorf("measure %v of a disk full of data: fully allocated %d, required %d", opts, m.FullyAllocated, m.Required)
			}
			checkOK(t, out)
		}
	}
	checkOK(t, top)
}

// TestMeasureSize: SIZE alone (or qemu's --size) measures an empty VHD,
// the length vhd create makes.
func TestMeasureSize(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []string{"dynamic", "fixed"} {
		img := filepath.Join(dir, typ+".vhd")
		vhdOK(t, "create", "--type", typ, "--size", "100M", img)
		for _, args := range [][]string{{"measure", "--json", "--to", typ, "100M"}, {"measure", "--output=json", "-O", typ, "--size", "100M"}} {
			var m measureJSON
			vhdJSON(t, &m, args...)
			if got := fileLen(t, img); m.Required != got || m.VirtualSize != 100<<20 {
				t.Errorf("vhd %v: required %d (virtual %d), vhd create made %d bytes", args, m.Required, m.VirtualSize, got)
			}
		}
		checkOK(t, img)
	}
	for _, args := range [][]string{
		{"measure"},
		{"measure", "10G", "--image", "x"},
		{"measure", "nosuchfile"},
		{"measure", "--to", "raw", "10G"},
		{"measure", "--to", "fixed", "--block-size", "1M", "10G"},
		{"measure", "--output", "xml", "10G"},
	} {
		vhdCode(t, 2, args...)
	}
	vhdCode(t, 1, "measure", "3000G")
}
