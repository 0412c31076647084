package main

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// noFlagOffered fails if out offers any of flags.
func noFlagOffered(t *testing.T, what string, r result, flags ...string) {
	t.Helper()
	for _, f := range flags {
		if strings.Contains(r.stderr+r.stdout, f) {
			t.Errorf("%s offers %s:\n%s", what, f, r)
		}
	}
}

func saysAll(t *testing.T, what string, r result, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(r.stderr+r.stdout, w) {
			t.Errorf("%s does not say %q:\n%s", what, w, r)
		}
	}
}

// stopServe ends a vhd serve started by startServe and waits for it to
// flush and close its images.
// TestLockRefusalNamesTheServer: an image a real vhd serve holds is
// refused with the server named (pid and socket); only info, which has
// -U, offers --force-share.
func TestLockRefusalNamesTheServer(t *testing.T) {
	dir := t.TempDir()
	img, sock := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "s.sock")
	vhdOK(t, "create", "--size", "4M", img)
	srv, _ := startServe(t, nil, "--socket", sock, img)
	holder := "'vhd serve' (pid " + strconv.Itoa(srv.Process.Pid) + ", socket " + sock + ")"

	r := vhdCode(t, exitFailed, "info", img)
	saysAll(t, "info of a served image", r, holder, "--force-share")
	r = vhdCode(t, exitFailed, "convert", "--to", "raw", img, filepath.Join(dir, "out.raw"))
	saysAll(t, "convert of a served image", r, holder)
	noFlagOffered(t, "convert of a served image", r, "--force-share")
	r = vhdCode(t, exitFailed, "repair", img)
	saysAll(t, "repair of a served image", r, holder)
	noFlagOffered(t, "repair of a served image", r, "--force-share")
	stopServe(t, srv)
	checkOK(t, img)
}
