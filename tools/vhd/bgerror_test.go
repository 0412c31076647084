package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackgroundErrorSaidOnce: a server started in the background (vhd
// mount, vhd serve --fork) that cannot start makes its starter print the
// server's own message once, with what to do, and nothing else: not the
// message again from the server's log, not Go's "stat " prefix.
func TestBackgroundErrorSaidOnce(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	missing := filepath.Join(dir, "missing.vhd")
	for _, args := range [][]string{
		{"mount", missing, mnt},
		{"serve", "--fork", "--socket", filepath.Join(dir, "s.sock"), missing},
	} {
		r := vhdCode(t, exitFailed, args...)
		want := "vhd " + args[0] + ": " + missing + ": no such file or directory\n  check the path, and that the file is there\n"
		if r.stderr != want {
			t.Errorf("vhd %s of a missing image printed:\n%q\nwant:\n%q", strings.Join(args, " "), r.stderr, want)
		}
	}
}
