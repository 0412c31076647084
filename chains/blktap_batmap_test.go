package chains

import (
	"bytes"
	"path/filepath"
	"testing"

	"vhdkit/engine"
	"vhdkit/internal/blktap"
)

// Interop with Xen's blktap (internal/blktap runs the real vhd-util and
// tapwrite): item 1 of issue 15, blktap's batmap.

// TestBlktapWriteAfterTrimIsKept is the repro: a block vhd-util
// filled (its batmap bit set) is trimmed by vhdkit; a child made by
// vhd-util takes a vhdkit write there and is coalesced by vhd-util into
// the parent. The write must reach the parent. Before the batmap bit was
// cleared, libvhd trusted it, skipped the bitmap update, and vhdkit and
// vhd-util read zeros where the write went.
func TestBlktapWriteAfterTrimIsKept(t *testing.T) {
	dir := t.TempDir()
	p, c := filepath.Join(dir, "P.vhd"), filepath.Join(dir, "C.vhd")
	blktap.Util(t, "create", "-n", p, "-s", "16")
	blktap.Util(t, "fill", "-n", p)

	img, err := engine.Open(p, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Trim(2<<20, 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	blktap.Check(t, p)
	checkClean(t, p)

	blktap.Util(t, "snapshot", "-n", c, "-p", p)
	ch, err := Open(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xab}, 4096)
	if _, err := ch.WriteAt(data, 2101248); err != nil {
		t.Fatal(err)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	blktap.Util(t, "coalesce", "-n", c)
	blktap.Check(t, p)
	checkClean(t, p)

	want := make([]byte, 16<<20)
	copy(want[2101248:], data)
	if got := blktap.Read(t, p, 16<<20); !bytes.Equal(got, want) {
		t.Errorf("vhd-util reads the parent wrong at %d", firstDiff(got, want))
	}
	img, err = engine.Open(p, engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, len(want))
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("vhdkit reads the parent wrong at %d", firstDiff(got, want))
	}
}

// TestBlktapWritesAfterTrimOfChild: the same through tapwrite, on a
// vhd-util child whose blocks vhdkit frees or clears partly: every
// later libvhd write reads back, in vhdkit and in vhd-util.
func TestBlktapWritesAfterTrimOfChild(t *testing.T) {
	dir := t.TempDir()
	p, c := filepath.Join(dir, "P.vhd"), filepath.Join(dir, "C.vhd")
	blktap.Util(t, "create", "-n", p, "-s", "8")
	blktap.Util(t, "snapshot", "-n", c, "-p", p)
	blktap.Util(t, "fill", "-n", c)
	model := make([]byte, 8<<20)
	ch, err := Open(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{0, 2 << 20}, {2<<20 + 512, 4096}} {
		if err := ch.Trim(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	for i, off := range []int64{4096, 2<<20 + 1024} {
		data := bytes.Repeat([]byte{byte(0x10 + i)}, 1024)
		blktap.Write(t, c, off, data)
		copy(model[off:], data)
	}
	blktap.Check(t, c)
	checkClean(t, c)
	if got := blktap.Read(t, c, int64(len(model))); !bytes.Equal(got, model) {
		t.Errorf("vhd-util reads the child wrong at %d", firstDiff(got, model))
	}
	ch, err = Open(c, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	verify(t, ch, model, "vhdkit")
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
