package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/internal/blktap"
)

// Item 4 of issue 15, the case where nothing fits: blktap packs its first
// block right after a one-sector BAT, so growing a 16 MiB image past what
// that sector holds (128 blocks of 2 MiB) leaves no room in front for the
// new BAT. vhd resize must say so, and the command it names must lay the
// image out so that vhd-util check accepts it. A resize that fits must
// print no note.
func TestResizeSaysWhenMetadataFollowsData(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "x.vhd")
	blktap.Util(t, "create", "-n", img, "-s", "16")
	want := bytes.Repeat([]byte{7}, 2<<20)
	blktap.Write(t, img, 0, want)

	r := vhdOK(t, "resize", "--size", "200M", img)
	if strings.Contains(r.stderr, "note:") {
		t.Fatalf("a resize that fits in front printed a note: %s", r.stderr)
	}
	blktap.Check(t, img)

	r = vhdOK(t, "resize", "--size", "1G", img)
	advice := "'vhd compact " + img + "'"
	if !strings.Contains(r.stderr, "no room before") || !strings.Contains(r.stderr, advice) {
		t.Fatalf("vhd resize did not say its metadata follows the data, or how to fix it: %q", r.stderr)
	}
	if blktap.CheckErr(t, img) == nil {
		t.Fatal("vhd-util check accepts the image the note says it rejects: the note is wrong")
	}
	checkOK(t, img)

	vhdOK(t, "compact", "--no-progress", img)
	blktap.Check(t, img)
	if got := blktap.Read(t, img, 4<<20); !bytes.Equal(got[:2<<20], want) || !bytes.Equal(got[2<<20:], make([]byte, 2<<20)) {
		t.Fatal("vhd-util reads other data after the resize and compaction")
	}
	checkOK(t, img)
}
