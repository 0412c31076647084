package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRelativePaths: relative --socket, --control and --fuse are
// made absolute before serve listens, mounts and prints them: the URI
// works from any folder, and 'vhd ctl' finds the server by its NBD
// socket's path.
func TestServeRelativePaths(t *testing.T) {
	needFUSE(t)
	need(t, "nbdinfo")
	dir := t.TempDir()
	srvDir, mnt := filepath.Join(dir, "srv"), filepath.Join(dir, "mnt")
	os.Mkdir(srvDir, 0o755)
	os.Mkdir(mnt, 0o755)
	img := filepath.Join(srvDir, "b.vhd")
	vhdOK(t, "create", "--size", "8M", img)
	s := startServedIn(t, srvDir, nil, "--socket", "rel2.sock", "--control", "rel2.ctl", "--fuse", "../mnt", "b.vhd")
	sock := filepath.Join(srvDir, "rel2.sock")
	if len(s.uris) != 1 || s.uris[0] != "nbd+unix:///b?socket="+sock {
		t.Errorf("printed URIs %q, want the socket's absolute path %s", s.uris, sock)
	}
	if s.fuse != mnt || s.control != filepath.Join(srvDir, "rel2.ctl") {
		t.Errorf("printed fuse:%s control:%s, want absolute paths", s.fuse, s.control)
	}
	info := clientCmd("nbdinfo", "--size", s.uris[0])
	info.Dir = dir // another folder than the server's
	if out, err := info.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "8388608" {
		t.Errorf("nbdinfo on the printed URI from another folder: %v\n%s", err, out)
	}
	for _, arg := range []string{sock, "rel2.sock"} {
		cmd := exec.Command(vhdBin, "ctl", arg, "status")
		cmd.Dir = srvDir
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "export b ") {
			t.Errorf("vhd ctl %s status (by the NBD socket): %v\n%s", arg, err, out)
		}
	}
	s.stop(t)
	checkOK(t, img)
}
