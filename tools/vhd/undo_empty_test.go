package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/chains"
	"vhdkit/service"
)

// writeMounted writes p at off into the disk file of the vhd mount at
// mnt, durably.
func writeMounted(t *testing.T, mnt string, p []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(mnt, "disk"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func gone(t *testing.T, path, when string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: %s is left behind (%v)", when, path, err)
	}
}

// TestMountLeavesNoEmptyUndoDisk: a mount that wrote nothing leaves no
// undo disk, whether unmounted, interrupted in the foreground or
// unmounted with --commit, and says so; the image can then be resized.
// A 9-byte write is measured alike by undo status and the commit.
func TestMountLeavesNoEmptyUndoDisk(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "d1.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "16M", img)
	vud := chains.UndoPath(img)

	mountImage(t, img, mnt)
	if _, err := os.ReadFile(filepath.Join(mnt, "disk")); err != nil {
		t.Fatal(err)
	}
	r := vhdOK(t, "umount", mnt)
	if !strings.Contains(r.stdout, "no changes; the undo disk "+vud+" was removed") || strings.Contains(r.stdout, "kept") {
		t.Errorf("umount after reading only:\n%s", r)
	}
	gone(t, vud, "umount after reading only")
	vhdOK(t, "resize", "-s", "+10M", img)

	cmd := exec.Command(vhdBin, "mount", "--foreground", img, mnt)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; !service.IsMounted(mnt); i++ {
		if i == 200 {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("vhd mount --foreground did not mount in 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("vhd mount --foreground after SIGINT: %v", err)
	}
	gone(t, vud, "mount --foreground interrupted")
	if !strings.Contains(out.String(), "no changes; the undo disk was removed") {
		t.Errorf("mount --foreground interrupted does not say the undo disk went:\n%s", out.String())
	}

	mountImage(t, img, mnt)
	r = vhdOK(t, "umount", "--commit", mnt)
	if !strings.Contains(r.stdout, "no changes; the undo disk "+vud+" was removed") {
		t.Errorf("umount --commit after no write:\n%s", r)
	}

	mountImage(t, img, mnt)
	writeMounted(t, mnt, []byte("hello wor"), 1000)
	vhdOK(t, "umount", mnt)
	r = vhdOK(t, "undo", "status", img)
	if !strings.Contains(r.stdout, "holding 512 B (512 bytes) of changes in 1 block, 2.0 MiB allocated") {
		t.Errorf("undo status after a 9-byte write:\n%s", r)
	}
	r = vhdOK(t, "undo", "commit", img)
	if !strings.Contains(r.stdout, "committed 512 B (512 bytes) of changes") {
		t.Errorf("undo commit after a 9-byte write:\n%s", r)
	}
	gone(t, vud, "undo commit")
	vhdOK(t, "create", "--type", "differencing", "--parent", img, vud)
	if r := vhdOK(t, "undo", "status", img); !strings.Contains(r.stdout, "holding no changes ('vhd undo discard "+img+"' removes it)") {
		t.Errorf("undo status of an empty undo disk:\n%s", r)
	}
	vhdOK(t, "undo", "discard", img)
	checkOK(t, img)
}

// TestStopSummarySaysUndoRemoved: vhd serve's stop line names an undo
// disk it removed for holding nothing.
func TestStopSummarySaysUndoRemoved(t *testing.T) {
	var b bytes.Buffer
	printStopSummary(&b, service.StopSummary{Why: "interrupted", Closed: []string{"d1.vhd"}, UndoRemoved: []string{"d1.vud"}})
	if want := "vhd serve: interrupted: disconnected 0 clients; flushed and closed d1.vhd; no changes: removed the undo disk d1.vud\n"; b.String() != want {
		t.Errorf("stop summary %q, want %q", b.String(), want)
	}
}
