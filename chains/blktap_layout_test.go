package chains

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"vhdkit/engine"
	"vhdkit/internal/blktap"
)

// Interop with Xen's blktap, item 4 of issue 15: vhd-util check rejects an
// image whose metadata lies after a data block, so resize and set-parent
// keep it in front whenever it fits; and (item 1) resize and compact keep
// a blktap image's creator, hidden flag and batmap.

// readAllOf reads a whole image (with its chain) through vhdkit.
func readAllOf(t *testing.T, path string) []byte {
	t.Helper()
	c, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, c.Size())
	if _, err := c.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// sameEverywhere checks that vhd-util check and vhd check pass on path
// and that vhdkit and vhd-util read want from it.
func sameEverywhere(t *testing.T, path string, want []byte) {
	t.Helper()
	blktap.Check(t, path)
	checkClean(t, path)
	if got := readAllOf(t, path); !bytes.Equal(got, want) {
		t.Fatalf("vhdkit reads %s wrong at byte %d", path, firstDiff(got, want))
	}
	if got := blktap.Read(t, path, int64(len(want))); !bytes.Equal(got, want) {
		t.Fatalf("vhd-util reads %s wrong at byte %d", path, firstDiff(got, want))
	}
}

func footerOf(t *testing.T, path string) engine.Footer {
	t.Helper()
	img, err := engine.Open(path, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	return img.Footer()
}

func writeThrough(t *testing.T, path string, off int64, p []byte) {
	t.Helper()
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBlktapChecksVhdkitResize(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.vhd")
	img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeDynamic, Size: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	want := make([]byte, 16<<20)
	copy(want[5<<20:], bytes.Repeat([]byte{3}, 3<<20))
	writeThrough(t, p, 5<<20, want[5<<20:8<<20])
	if err := Resize(p, 300<<20, ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	want = append(want, make([]byte, 300<<20-16<<20)...)
	sameEverywhere(t, p, want)
}

func TestBlktapImageResizedByVhdkit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.vhd")
	blktap.Util(t, "create", "-n", p, "-s", "16")
	blktap.Util(t, "set", "-n", p, "-f", "hidden", "-v", "1")
	want := bytes.Repeat([]byte{0x5a}, 4<<20)
	blktap.Write(t, p, 0, want)
	before := footerOf(t, p)
	if err := Resize(p, 40<<20, ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	after := footerOf(t, p)
	if after.Creator() != before.Creator() || after.CreatorVersion != before.CreatorVersion || after.Hidden != 1 {
		t.Errorf("resize changed creator %q %#x hidden %d to %q %#x hidden %d", before.Creator(), before.CreatorVersion, before.Hidden, after.Creator(), after.CreatorVersion, after.Hidden)
	}
	want = append(want, make([]byte, 36<<20)...)
	sameEverywhere(t, p, want)
	// blktap goes on writing it, past the old end too.
	tail := bytes.Repeat([]byte{0x77}, 2<<20)
	blktap.Write(t, p, 36<<20, tail)
	copy(want[36<<20:], tail)
	sameEverywhere(t, p, want)
}

func TestBlktapChecksVhdkitSetParent(t *testing.T) {
	dir := t.TempDir()
	base, kid := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "kid.vhd")
	blktap.Util(t, "create", "-n", base, "-s", "8")
	blktap.Util(t, "snapshot", "-n", kid, "-p", base)
	want := bytes.Repeat([]byte{0x42}, 8<<20)
	writeThrough(t, kid, 0, want[:3<<20])
	blktap.Write(t, kid, 3<<20, want[3<<20:])

	moved := filepath.Join(dir, "moved")
	if err := os.Mkdir(moved, 0o755); err != nil {
		t.Fatal(err)
	}
	nbase := filepath.Join(moved, "base-copy.vhd")
	if err := os.Rename(base, nbase); err != nil {
		t.Fatal(err)
	}
	if err := SetParent(kid, nbase, SetParentOptions{}); err != nil {
		t.Fatal(err)
	}
	sameEverywhere(t, kid, want)

	// A vhdkit child, written, then re-linked.
	vkid := filepath.Join(dir, "vkid.vhd")
	c, err := CreateChild(nbase, vkid, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(want[:1<<20], 0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	other := filepath.Join(dir, "base.vhd")
	if err := os.Rename(nbase, other); err != nil {
		t.Fatal(err)
	}
	if err := SetParent(vkid, other, SetParentOptions{}); err != nil {
		t.Fatal(err)
	}
	vwant := make([]byte, 8<<20)
	copy(vwant, want[:1<<20])
	sameEverywhere(t, vkid, vwant)
}

// TestBlktapCompactKeepsXen: compaction keeps a blktap image's creator
// and hidden flag, and gives the new file a batmap blktap trusts.
func TestBlktapCompactKeepsXen(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.vhd")
	blktap.Util(t, "create", "-n", p, "-s", "16")
	blktap.Util(t, "fill", "-n", p)
	blktap.Util(t, "set", "-n", p, "-f", "hidden", "-v", "1")
	want := make([]byte, 16<<20)
	copy(want[6<<20:], bytes.Repeat([]byte{9}, 1<<20))
	blktap.Write(t, p, 6<<20, want[6<<20:7<<20])
	before := footerOf(t, p)
	if _, err := Compact(context.Background(), p, CompactOptions{}); err != nil {
		t.Fatal(err)
	}
	after := footerOf(t, p)
	if after.Creator() != "tap" || after.CreatorVersion != before.CreatorVersion || after.Hidden != 1 || after.UUID != before.UUID {
		t.Errorf("compact made creator %q %#x hidden %d uuid %s of %q %#x hidden %d uuid %s", after.Creator(), after.CreatorVersion, after.Hidden, after.UUID, before.Creator(), before.CreatorVersion, before.Hidden, before.UUID)
	}
	sameEverywhere(t, p, want)
	more := bytes.Repeat([]byte{0xee}, 512<<10)
	blktap.Write(t, p, 1<<20, more)
	copy(want[1<<20:], more)
	sameEverywhere(t, p, want)
}

// TestXenChildOfCompactedParent: compaction keeps the parent's file time,
// which the children Xen's tools made recorded; they open after it.
func TestXenChildOfCompactedParent(t *testing.T) {
	dir := t.TempDir()
	p, c := filepath.Join(dir, "P.vhd"), filepath.Join(dir, "C.vhd")
	blktap.Util(t, "create", "-n", p, "-s", "8")
	want := make([]byte, 8<<20)
	copy(want[2<<20:], bytes.Repeat([]byte{4}, 1<<20))
	blktap.Write(t, p, 2<<20, want[2<<20:3<<20])
	blktap.Write(t, p, 5<<20, make([]byte, 2<<20)) // a block of zeros to give back
	// A file time other than the footer's, as a parent written after it
	// was made has: the child records it.
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, past, past); err != nil {
		t.Fatal(err)
	}
	blktap.Util(t, "snapshot", "-n", c, "-p", p)
	if _, err := Compact(context.Background(), p, CompactOptions{}); err != nil {
		t.Fatal(err)
	}
	sameEverywhere(t, c, want)
}
