package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNewFileInMissingFolder: every command that writes a new file says
// which folder is missing, before anything, and never shows the
// temporary name it would have written first (.NAME.tmp-*, .part,
// .creating), nor a hint about a missing file.
func TestNewFileInMissingFolder(t *testing.T) {
	dir := errorFixtures(t)
	nodir := filepath.Join(dir, "nodir")
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "f.vhd")+"=disk") // d.vhd stays free
	for _, args := range [][]string{
		{"convert", "--to", "dynamic", "d.vhd", "nodir/x.vhd"},
		{"create", "--size", "1M", "nodir/x.vhd"},
		{"snapshot", "d.vhd", "nodir/x.vhd"},
		{"merge", "--to", "nodir/x.vhd", "d.vhd"},
		{"backup", "pull", srv.uris[0], "nodir/x.vhd"},
		{"ctl", srv.control, "snapshot", "disk", filepath.Join(nodir, "x.vhd")},
	} {
		cmd := exec.Command(vhdBin, args...)
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput()
		want := "folder " + nodir + " does not exist: create it first, or choose another place for x.vhd"
		if !strings.Contains(string(out), want) || strings.Contains(string(out), "check the path") ||
			strings.Contains(string(out), ".tmp-") || strings.Contains(string(out), ".part") || strings.Contains(string(out), ".creating") {
			t.Errorf("vhd %s:\n%s\nwant %q, no temporary name, no hint", strings.Join(args, " "), out, want)
		}
	}
	srv.stop(t)
	checkOK(t, filepath.Join(dir, "f.vhd"))
}
