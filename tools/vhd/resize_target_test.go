package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestResizeRelative: --size +SIZE grows by SIZE, --size -SIZE shrinks
// by SIZE without --shrink (the sign asks for it) and still refuses to
// cut off data.
func TestResizeRelative(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "d.vhd")
	vhdOK(t, "create", "--size", "64M", img)
	vhdOK(t, "resize", "--size", "+32M", img)
	if got := qemuVirtualSize(t, img, "vpc"); got != 96<<20 {
		t.Fatalf("after +32M qemu-img sees %d bytes, want %d", got, 96<<20)
	}
	vhdOK(t, "resize", "--size=-16M", img)
	if got := qemuVirtualSize(t, img, "vpc"); got != 80<<20 {
		t.Fatalf("after -16M qemu-img sees %d bytes, want %d", got, 80<<20)
	}
	data := writeSome(t, img) // at 3 MiB + 512
	r := vhdCode(t, exitFailed, "resize", "-s", "-78M", img)
	if !strings.Contains(r.stderr, "data") {
		t.Errorf("shrinking over data:\n%s", r)
	}
	vhdCode(t, exitUsage, "resize", "--size", "-80M", img)
	vhdCode(t, exitUsage, "resize", img)
	vhdCode(t, exitUsage, "resize", "--size", "1G", "--to-minimum", img)
	if got := readBack(t, img, 3<<20+512, len(data)); !bytes.Equal(got, data) {
		t.Fatal("a refused shrink changed the data")
	}
	checkOK(t, img)
}

// TestResizeToMinimum: --to-minimum shrinks an MBR disk to the end of
// its last partition (a logical one here), keeping every partition's
// bytes; an unpartitioned disk is refused with the reason, and a disk
// with data past its last partition is refused by the data check (GPT
// disks: resize_gpt_test.go).
func TestResizeToMinimum(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "d.raw")
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 64<<20); err != nil {
		t.Fatal(err)
	}
	sfdisk(t, raw, "label: dos\nstart=2048, size=20480, type=83\nstart=22528, size=40960, type=5\nstart=24576, size=8192, type=83\n")
	end := int64(24576+8192) * 512 // the logical partition's end
	last := bytes.Repeat([]byte{0xAB}, 4096)
	f, err := os.OpenFile(raw, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(last, end-4096)
	f.Close()
	img := filepath.Join(dir, "d.vhd")
	vhdOK(t, "convert", "--to", "dynamic", raw, img)

	r := vhdOK(t, "resize", "--to-minimum", img)
	if got := qemuVirtualSize(t, img, "vpc"); got != end {
		t.Fatalf("--to-minimum: qemu-img sees %d bytes, want the last partition's end %d\n%s", got, end, r)
	}
	if got := readBack(t, img, end-4096, 4096); !bytes.Equal(got, last) {
		t.Fatal("--to-minimum lost the last partition's last bytes")
	}
	checkOK(t, img)

	// Data past the last partition: refused, nothing changed.
	dirty := filepath.Join(dir, "dirty.raw")
	os.WriteFile(dirty, nil, 0o644)
	os.Truncate(dirty, 64<<20)
	sfdisk(t, dirty, "label: dos\nstart=2048, size=20480, type=83\n")
	f, _ = os.OpenFile(dirty, os.O_RDWR, 0)
	f.WriteAt([]byte("stray"), 40<<20)
	f.Close()
	dimg := filepath.Join(dir, "dirty.vhd")
	vhdOK(t, "convert", "--to", "fixed", dirty, dimg)
	vhdCode(t, exitFailed, "resize", "--to-minimum", dimg)
	if got := qemuVirtualSize(t, dimg, "vpc"); got != 64<<20 {
		t.Fatalf("a refused --to-minimum changed the size to %d", got)
	}
	checkOK(t, dimg)

	for _, c := range []struct{ label, want string }{
		{"", "no partition table"},
	} {
		p := filepath.Join(dir, "other.raw")
		os.Remove(p)
		os.WriteFile(p, nil, 0o644)
		os.Truncate(p, 16<<20)
		if c.label != "" {
			sfdisk(t, p, c.label)
		}
		v := filepath.Join(dir, "other.vhd")
		os.Remove(v)
		vhdOK(t, "convert", "--to", "dynamic", p, v)
		if r := vhdCode(t, exitFailed, "resize", "--to-minimum", v); !strings.Contains(r.stderr, c.want) {
			t.Errorf("--to-minimum of a disk with %q:\n%s", c.label, r)
		}
		checkOK(t, v)
	}
}

// TestResizeRefusesCuttingPartitions: a shrink below the end of the last
// partition, or any shrink of a GPT disk by --size, is refused naming
// the partition (or the backup table) and what to do, even where the
// part cut off reads zeros; --force cuts anyway. A shrink without
// --shrink is a usage error that does not claim to cut off data. Before,
// the MBR shrink went through silently and the message without --shrink
// said "cuts off data" of an empty tail.
func TestResizeRefusesCuttingPartitions(t *testing.T) {
	dir := t.TempDir()
	raw, img := filepath.Join(dir, "d.raw"), filepath.Join(dir, "d.vhd")
	os.WriteFile(raw, nil, 0o644)
	os.Truncate(raw, 100<<20)
	sfdisk(t, raw, "label: dos\nstart=2048, size=40960, type=83\nstart=43008, size=122880, type=83\n")
	vhdOK(t, "convert", "--to", "dynamic", raw, img)
	if r := vhdCode(t, exitUsage, "resize", "--size", "90M", img); !strings.Contains(r.stderr, "needs --shrink") || strings.Contains(r.stderr, "cuts off data") {
		t.Errorf("shrink without --shrink:\n%s", r)
	}
	for _, args := range [][]string{{"--size", "60M", "--shrink"}, {"--size", "-30M"}} {
		r := vhdCode(t, exitFailed, append(append([]string{"resize"}, args...), img)...)
		if !strings.Contains(r.stderr, "would cut partition 2, which ends at 81 MiB") || !strings.Contains(r.stderr, "--to-minimum") {
			t.Errorf("resize %v:\n%s", args, r)
		}
	}
	if got := qemuVirtualSize(t, img, "vpc"); got != 100<<20 {
		t.Fatalf("a refused shrink changed the size to %d", got)
	}
	vhdOK(t, "resize", "--size", "60M", "--shrink", "--force", img)
	checkOK(t, img)

	gpt, gimg := filepath.Join(dir, "g.raw"), filepath.Join(dir, "g.vhd")
	os.WriteFile(gpt, nil, 0o644)
	os.Truncate(gpt, 64<<20)
	sfdisk(t, gpt, "label: gpt\nstart=2048, size=20480\n")
	vhdOK(t, "convert", "--to", "dynamic", gpt, gimg)
	if r := vhdCode(t, exitFailed, "resize", "--size", "-1M", gimg); !strings.Contains(r.stderr, "backup copy") || !strings.Contains(r.stderr, "--to-minimum") {
		t.Errorf("GPT shrink by --size:\n%s", r)
	}
	checkOK(t, gimg)
}
