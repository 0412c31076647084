package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vhdkit/chains"
	"vhdkit/service"
)

// TestUmountByImageAndAll: vhd umount takes an image as well as a mount
// point (Dismount-VHD -Path), and --all takes down every mount, dealing
// with undo disks as asked and leaving the read-only mount's image as it
// was.
func TestUmountByImageAndAll(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	var imgs, mnts []string
	for _, n := range []string{"a", "b", "c"} {
		img, mnt := filepath.Join(dir, n+".vhd"), filepath.Join(dir, "mnt-"+n)
		os.Mkdir(mnt, 0o755)
		vhdOK(t, "create", "--size", "8M", img)
		imgs, mnts = append(imgs, img), append(mnts, mnt)
	}
	mountImage(t, imgs[0], mnts[0])
	mountImage(t, imgs[1], mnts[1])
	mountImage(t, "--read-only", imgs[2], mnts[2])
	for _, m := range mnts[:2] { // an undo disk holding nothing would go
		writeMounted(t, m, []byte("kept"), 1<<20)
	}

	// By image, through a relative path.
	cmd := exec.Command(vhdBin, "umount", filepath.Base(imgs[0]))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "unmounted "+mnts[0]) {
		t.Fatalf("vhd umount IMAGE: %v\n%s", err, out)
	}
	if service.IsMounted(mnts[0]) {
		t.Fatal("the image's mount point is still mounted")
	}
	// An image nobody mounted: said so, exit 1.
	r := vhdCode(t, exitFailed, "umount", imgs[0])
	if !strings.Contains(r.stderr, "is not mounted by 'vhd mount'") {
		t.Errorf("umount of an image not mounted:\n%s", r)
	}
	// --commit refuses an image mounted read-only before touching anything.
	vhdCode(t, exitUsage, "umount", "--commit", imgs[2])
	if !service.IsMounted(mnts[2]) {
		t.Fatal("a refused umount unmounted")
	}
	vhdCode(t, exitUsage, "umount", "--all", mnts[1])

	r = vhdOK(t, "umount", "--all", "--discard")
	for _, m := range mnts[1:] {
		if !strings.Contains(r.stdout, "unmounted "+m) || service.IsMounted(m) {
			t.Errorf("--all left %s mounted:\n%s", m, r)
		}
	}
	if !strings.Contains(r.stdout, "discarded "+chains.UndoPath(imgs[1])) {
		t.Errorf("--all --discard did not discard b's undo disk:\n%s", r)
	}
	if r := vhdOK(t, "umount", "--all"); !strings.Contains(r.stdout, "nothing is mounted") {
		t.Errorf("umount --all with nothing mounted:\n%s", r)
	}
	for _, img := range imgs {
		checkOK(t, img)
	}
	if _, err := os.Stat(chains.UndoPath(imgs[0])); err != nil {
		t.Errorf("umount IMAGE without --commit/--discard must keep the undo disk: %v", err)
	}
}

// TestMountListShowsServeMounts: 'vhd mount --list' lists the FUSE
// mounts of 'vhd serve --fuse' too, saying whose they are; vhd umount
// leaves them to their server (naming how to stop it), and they are gone
// from the list when the server stops.
func TestMountListShowsServeMounts(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "s.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "8M", img)
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), "--read-only", "--fuse", mnt, img)

	r := vhdOK(t, "mount", "--list")
	if !strings.Contains(r.stdout, mnt+"  "+img+"  read-only") || !strings.Contains(r.stdout, "vhd serve export s") {
		t.Fatalf("mount --list does not show the serve --fuse mount:\n%s", r)
	}
	var list []service.MountState
	vhdJSON(t, &list, "mount", "--list", "--json")
	if len(list) != 1 || list[0].Server != "vhd serve" || list[0].Export != "s" || list[0].Control != srv.control {
		t.Errorf("mount --list --json: %+v", list)
	}
	r = vhdCode(t, exitFailed, "umount", mnt)
	if !strings.Contains(r.stderr, "served by 'vhd serve' (pid") || !service.IsMounted(mnt) {
		t.Errorf("umount of a serve --fuse mount:\n%s", r)
	}
	r = vhdOK(t, "umount", "--all")
	if !strings.Contains(r.stderr, "leaving "+mnt) || !service.IsMounted(mnt) {
		t.Errorf("umount --all and a serve --fuse mount:\n%s", r)
	}
	srv.stop(t)
	if r := vhdOK(t, "mount", "--list"); !strings.Contains(r.stdout, "nothing is mounted") {
		t.Errorf("the serve mount is still listed after its server stopped:\n%s", r)
	}
	checkOK(t, img)
}

// TestUmountWaitsForItsOwnServer: unmounting one of two mounts of an
// image waits for that mount's server, not for the image's lock, which
// the other mount holds: it returns at once, the other mount serving on.
func TestUmountWaitsForItsOwnServer(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "d1.vhd")
	vhdOK(t, "create", "--size", "8M", img)
	mnt, mnt2 := filepath.Join(dir, "mnt"), filepath.Join(dir, "mnt2")
	os.Mkdir(mnt, 0o755)
	os.Mkdir(mnt2, 0o755)
	for _, first := range []string{"--read-only", "--no-undo=false"} {
		mountImage(t, first, img, mnt)
		mountImage(t, "--read-only", img, mnt2)
		if first != "--read-only" {
			writeMounted(t, mnt, []byte("kept"), 1<<20)
		}
		for _, m := range []string{mnt, mnt2} { // the first while the second holds the lock
			start := time.Now()
			r := vhdOK(t, "umount", "--timeout", "5s", m)
			if took := time.Since(start); took > 3*time.Second || service.IsMounted(m) {
				t.Errorf("%s: umount %s took %v (mounted after: %v):\n%s", first, m, took.Round(time.Millisecond), service.IsMounted(m), r)
			}
		}
	}
	vhdOK(t, "undo", "discard", img)
	checkOK(t, img)
}
