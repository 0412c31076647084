package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestLiveOpsUnderQD32: an NBD client writes 64 KiB blocks at QD32 and
// keeps a model of every acknowledged write while 25 live snapshots and
// 25 live merges (20 of the top, 5 of a middle layer) run one after
// another through vhd ctl. No request fails, the disk then
// reads exactly as the model says (the client reads every block back),
// and every layer left passes vhd check, with nothing left behind.
func TestLiveOpsUnderQD32(t *testing.T) {
	need(t, "nbdsh")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vhd")
	vhdOK(t, "create", "--size", "256M", base)
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), base+"=disk")
	writer := startClient(t, srv.uris[0], "write", 256<<20, 3, "QD=32")
	for i := range 20 {
		next := filepath.Join(dir, fmt.Sprintf("s%02d.vhd", i))
		srv.ctl(t, 0, "snapshot", "disk", next)
		if i%4 == 3 {
			// A second snapshot, then the layer under it (next) is
			// folded into the base and the new top re-linked onto it.
			srv.ctl(t, 0, "snapshot", "disk", filepath.Join(dir, fmt.Sprintf("t%02d.vhd", i)))
			srv.ctl(t, 0, "merge", "disk", "--layer", next)
		}
		srv.ctl(t, 0, "merge", "disk")
	}
	writer.finish(t)
	srv.stop(t)
	left, _ := filepath.Glob(filepath.Join(dir, "*.vhd"))
	for _, p := range left {
		checkClean(t, p)
	}
	for _, pat := range []string{"*.merging", "*.merge-target", "*.creating"} {
		if junk, _ := filepath.Glob(filepath.Join(dir, pat)); len(junk) > 0 {
			t.Errorf("left behind: %v", junk)
		}
	}
	if _, err := os.Stat(base); err != nil {
		t.Errorf("the base is gone: %v", err)
	}
	t.Logf("images left: %v", left)
}
