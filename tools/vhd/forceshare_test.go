package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestForceShareReaders: the commands that only read take qemu-img's -U
// and read an image a server is writing; without it they are refused
// naming the server. Before, -U was info's alone ("unknown flag -U").
func TestForceShareReaders(t *testing.T) {
	dir := t.TempDir()
	img, other := filepath.Join(dir, "d.vhd"), filepath.Join(dir, "o.vhd")
	vhdOK(t, "create", "--size", "4M", img)
	vhdOK(t, "create", "--size", "4M", other)
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), img+"=disk")
	if r := vhd(t, "compare", img, other); r.code != 2 || !strings.Contains(r.stderr, "in use") {
		t.Errorf("compare of a served image without -U: %s", r)
	}
	for _, args := range [][]string{
		{"compare", "-U", img, other},
		{"map", "-U", img},
		{"measure", "-U", "--image", img},
		{"convert", "-U", "--to", "raw", img, filepath.Join(dir, "d.raw")},
	} {
		vhdOK(t, args...)
	}
	srv.stop(t)
	checkOK(t, img)
}
