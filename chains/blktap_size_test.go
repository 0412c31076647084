package chains

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"vhdkit/internal/blktap"
)

// Interop with Xen's blktap, item 3 of issue 15: vhd-util resize grows a
// leaf over its parent (or a parent under its child). Past a parent's
// end a chain reads zeros; a child smaller than its parent shows the
// parent's first bytes. vhdkit refused both: "parent does not match the
// child".

// TestLeafLargerThanParent: a vhd-util child grown by vhd-util resize,
// written past its parent's end by tapwrite and by vhdkit, then merged
// by vhdkit into its parent, which grows to hold it.
func TestLeafLargerThanParent(t *testing.T) {
	dir := t.TempDir()
	p, c := filepath.Join(dir, "P.vhd"), filepath.Join(dir, "C.vhd")
	blktap.Util(t, "create", "-n", p, "-s", "16")
	model := make([]byte, 24<<20)
	base := bytes.Repeat([]byte{0x11}, 16<<20)
	blktap.Write(t, p, 0, base)
	copy(model, base)
	blktap.Util(t, "snapshot", "-n", c, "-p", p)
	blktap.Util(t, "resize", "-n", c, "-s", "24", "-j", filepath.Join(dir, "journal"))
	sameEverywhere(t, c, model)

	xen := bytes.Repeat([]byte{0x22}, 3<<20)
	blktap.Write(t, c, 17<<20, xen)
	copy(model[17<<20:], xen)
	ours := bytes.Repeat([]byte{0x33}, 2<<20)
	writeThrough(t, c, 15<<20, ours)
	copy(model[15<<20:], ours)
	sameEverywhere(t, c, model)

	if _, err := Merge(context.Background(), c, MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	sameEverywhere(t, p, model)
}

// TestParentLargerThanChild: vhd-util resize grows a parent under its
// child; the child keeps its size and shows the parent's first bytes.
func TestParentLargerThanChild(t *testing.T) {
	dir := t.TempDir()
	p, c := filepath.Join(dir, "P.vhd"), filepath.Join(dir, "C.vhd")
	blktap.Util(t, "create", "-n", p, "-s", "16")
	model := bytes.Repeat([]byte{0x44}, 16<<20)
	blktap.Write(t, p, 0, model)
	blktap.Util(t, "snapshot", "-n", c, "-p", p)
	blktap.Util(t, "resize", "-n", p, "-s", "32", "-j", filepath.Join(dir, "journal"))
	blktap.Write(t, p, 16<<20, bytes.Repeat([]byte{0x55}, 1<<20)) // beyond the child: never shown
	blktap.Util(t, "modify", "-n", c, "-p", p)                    // re-stamp the parent's file time, as Xen does
	ours := bytes.Repeat([]byte{0x66}, 1<<20)
	writeThrough(t, c, 8<<20, ours)
	copy(model[8<<20:], ours)
	sameEverywhere(t, c, model)
}
