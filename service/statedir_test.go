package service

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestPrivateDirUmask: a folder vhd makes is 0700 even under a umask
// that would leave the owner less.
func TestPrivateDirUmask(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vhdkit")
	old := syscall.Umask(0o277)
	err := privateDir(path)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%v %v", fi, err)
	}
	if err := privateDir(path); err != nil {
		t.Fatalf("checking it again: %v", err)
	}
}
