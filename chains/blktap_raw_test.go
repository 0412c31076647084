package chains

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/internal/blktap"
)

// TestChildOfRawParent (item 6 of issue 15): vhd-util snapshot -m makes a
// child whose parent is a raw disk image (a null parent UUID, the file
// named by the locators). vhdkit reads, writes, checks, compacts and
// re-links it as vhd-util does; it refuses to merge into the raw file,
// saying what to do instead. vhdkit refused it before: "parent not
// found".
func TestChildOfRawParent(t *testing.T) {
	dir := t.TempDir()
	raw, c := filepath.Join(dir, "R.raw"), filepath.Join(dir, "RC.vhd")
	model := randBytes(rand.New(rand.NewPCG(6, 6)), 16<<20)
	if err := os.WriteFile(raw, model, 0o644); err != nil {
		t.Fatal(err)
	}
	blktap.Util(t, "snapshot", "-n", c, "-p", raw, "-m")
	sameEverywhere(t, c, model)

	ours := bytes.Repeat([]byte{1}, 3<<20)
	writeThrough(t, c, 1<<20, ours)
	copy(model[1<<20:], ours)
	xen := bytes.Repeat([]byte{2}, 1<<20)
	blktap.Write(t, c, 7<<20+512, xen)
	copy(model[7<<20+512:], xen)
	sameEverywhere(t, c, model)

	if _, err := Compact(context.Background(), c, CompactOptions{}); err != nil {
		t.Fatal(err)
	}
	sameEverywhere(t, c, model)

	moved := filepath.Join(dir, "elsewhere")
	if err := os.Mkdir(moved, 0o755); err != nil {
		t.Fatal(err)
	}
	nraw := filepath.Join(moved, "R2.raw")
	if err := os.Rename(raw, nraw); err != nil {
		t.Fatal(err)
	}
	if err := SetParent(c, nraw, SetParentOptions{}); err != nil {
		t.Fatal(err)
	}
	sameEverywhere(t, c, model)

	_, err := Merge(context.Background(), c, MergeOptions{})
	if err == nil || !strings.Contains(err.Error(), "raw disk image") || !strings.Contains(err.Error(), "vhd merge --to") {
		t.Fatalf("merge into a raw parent: %v", err)
	}
	sameEverywhere(t, c, model)
}
