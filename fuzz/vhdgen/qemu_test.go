package vhdgen_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"vhdkit/fuzz/vhdgen"
)

// qemuKnownRight is whether QEMU 7.2's vpc driver is known to read the
// case right, so that it can vouch for the reference: a valid fixed or
// dynamic image with a full footer, blocks of 4 KiB or more (it sizes
// smaller blocks' bitmaps as 0 bytes), sized alike by QEMU's CHS rule
// and the reference.
func qemuKnownRight(b *vhdgen.Built) bool {
	l := b.Case.Layers[0]
	if b.View == nil || b.Case.Mutation != nil || len(b.Case.Layers) > 1 || l.Short || l.Type != vhdgen.TypeFixed && l.BlockSize < 4096 {
		return false
	}
	switch l.Creator {
	case "win ", "qem2", "d2v ", "CTXS", "tap\x00":
		return true
	}
	return l.Geometry == vhdgen.Geometry{Cylinders: 65535, Heads: 16, Sectors: 255} || l.Geometry.Bytes() == b.View.Size
}

// TestQemuAgrees: qemu-img reads the plain fixed and dynamic cases as the
// reference decodes them (an independent reader vouching for it).
func TestQemuAgrees(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img is missing: run scripts/setup.sh")
	}
	dir := t.TempDir()
	compared := 0
	for i := 0; compared < 25 && i < 2000; i++ {
		b, err := vhdgen.Generate(5, i, vhdgen.Options{}).Build()
		if err != nil || !qemuKnownRight(b) {
			continue
		}
		compared++
		path, err := b.Write(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("qemu-img", "info", "--output=json", "-f", "vpc", path).Output()
		var info struct {
			Size int64 `json:"virtual-size"`
		}
		if err != nil || json.Unmarshal(out, &info) != nil || info.Size != b.View.Size {
			t.Errorf("case %d (%s): qemu-img info: %v, size %d; the reference says %d", i, b.Case.Describe(), err, info.Size, b.View.Size)
			continue
		}
		raw := filepath.Join(dir, "out.raw")
		if out, err := exec.Command("qemu-img", "convert", "-f", "vpc", "-O", "raw", path, raw).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img convert: %v\n%s", err, out)
		}
		got, _ := os.ReadFile(raw)
		if !bytes.Equal(got, b.View.Raw) {
			t.Errorf("case %d (%s): qemu-img reads other bytes (first at %d)", i, b.Case.Describe(), firstDiff(got, b.View.Raw))
		}
		checkImage(t, path)
	}
	if compared < 25 {
		t.Errorf("only %d cases qemu-img can vouch for", compared)
	}
}
