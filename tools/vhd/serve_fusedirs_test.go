package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestServeFuseFoldersRemoved: vhd serve --fuse DIR with several images
// mounts each at DIR/NAME, making the folders that are missing; once it
// stops, the folders it made are gone, and one the user made stays.
// (They used to be left behind.)
func TestServeFuseFoldersRemoved(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine: cannot mount FUSE")
	}
	dir := t.TempDir()
	a, b, fuse := filepath.Join(dir, "a.vhd"), filepath.Join(dir, "b.vhd"), filepath.Join(dir, "fuse")
	vhdOK(t, "create", "--size", "4M", a)
	vhdOK(t, "create", "--size", "4M", b)
	mkdir(t, fuse, 0o755)
	mkdir(t, filepath.Join(fuse, "b"), 0o755) // the user's own
	cmd, _ := startServe(t, nil, "--socket", filepath.Join(dir, "s.sock"), "--fuse", fuse, a, b)
	for i := 0; i < 500; i++ { // the fuse lines follow the URIs
		if _, err := os.Stat(filepath.Join(fuse, "b", "disk")); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := os.Stat(filepath.Join(fuse, name, "disk")); err != nil {
			t.Fatalf("export %s is not mounted: %v", name, err)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("vhd serve after SIGTERM: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(fuse, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the folder vhd serve made for export a is left behind: %v", err)
	}
	if names := entries(t, fuse); len(names) != 1 || names[0] != "b" {
		t.Errorf("%s holds %v, want only the user's folder b", fuse, names)
	}
	checkOK(t, a)
	checkOK(t, b)
}
