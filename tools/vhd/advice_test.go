package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"vhdkit/chains"
	"vhdkit/service"
)

// The tests of advice: what vhd says when an operation would destroy
// data, run against real mounts and servers holding the image.

// TestNoUndoMountRefusedOverKeptUndoDisk is the story: a plain
// umount keeps disk.vud; mount --no-undo must then refuse to write
// disk.vhd (it used to, silently, and then advised the flag that reads
// the undo disk over the changed image), naming the undo disk and the
// commands that resolve it; the undo disk still holds its change.
func TestNoUndoMountRefusedOverKeptUndoDisk(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "16M", img)
	mountImage(t, img, mnt)
	f, err := os.OpenFile(filepath.Join(mnt, "disk"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("kept in the undo disk"), 1<<20)
	f.Sync()
	f.Close()
	vhdOK(t, "umount", mnt)
	before := fileSum(t, img)

	r := vhdCode(t, exitFailed, "mount", "--no-undo", img, mnt)
	saysAll(t, "mount --no-undo over an undo disk", r, chains.UndoPath(img), "'vhd undo commit "+img+"'", "'vhd undo discard "+img+"'")
	noFlagOffered(t, "mount --no-undo over an undo disk", r, "--accept-modified-parent")
	if service.IsMounted(mnt) {
		t.Fatal("mounted anyway")
	}
	if fileSum(t, img) != before {
		t.Fatal("the refused mount wrote the image")
	}
	// Served for writing: the same refusal.
	r = vhdCode(t, exitFailed, "serve", "--socket", filepath.Join(dir, "s.sock"), img)
	saysAll(t, "serve over an undo disk", r, chains.UndoPath(img), "'vhd undo discard "+img+"'")
	if fileSum(t, img) != before {
		t.Fatal("the refused serve wrote the image")
	}
	// The undo disk is intact and is what a default mount shows.
	mountImage(t, img, mnt)
	got := make([]byte, 21)
	f, err = os.Open(filepath.Join(mnt, "disk"))
	if err != nil {
		t.Fatal(err)
	}
	f.ReadAt(got, 1<<20)
	f.Close()
	if string(got) != "kept in the undo disk" {
		t.Fatalf("the undo disk's change after the refusals: %q", got)
	}
	vhdOK(t, "umount", "--discard", mnt)
	checkOK(t, img)
}

// TestSnapshotRefusedWhileServedOrMounted: a real vhd serve or vhd mount
// holding the image makes vhd snapshot refuse, naming who holds it (the
// server's socket, the mount point) and no flag the command lacks; a
// read-only export does not.
func TestSnapshotRefusedWhileServedOrMounted(t *testing.T) {
	dir := t.TempDir()
	img, top := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "top.vhd")
	vhdOK(t, "create", "--size", "16M", img)
	mode := func() os.FileMode { st, _ := os.Stat(img); return st.Mode() }
	before := mode()
	refused := func(what string, words ...string) {
		t.Helper()
		r := vhdCode(t, exitFailed, "snapshot", img, top)
		saysAll(t, what, r, words...)
		noFlagOffered(t, what, r, "--force-share", "--accept-modified-parent")
		if _, err := os.Stat(top); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: the refused snapshot made %s", what, top)
		}
		if mode() != before {
			t.Fatalf("%s: the refused snapshot changed the mode to %v", what, mode())
		}
	}

	sock := filepath.Join(dir, "s.sock")
	srv, _ := startServe(t, nil, "--socket", sock, img)
	refused("snapshot of a served image", "'vhd serve' (pid "+strconv.Itoa(srv.Process.Pid), sock)
	stopServe(t, srv)

	srv, _ = startServe(t, nil, "--undo", "--socket", sock, img)
	refused("snapshot of an image served through its undo disk", chains.UndoPath(img), "in use", "'vhd serve' (pid "+strconv.Itoa(srv.Process.Pid))
	stopServe(t, srv)
	if _, err := os.Stat(chains.UndoPath(img)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the undo disk nothing wrote is left after the server stopped: %v", err)
	}

	if _, err := os.Stat("/dev/fuse"); err == nil {
		t.Run("mounted", func(t *testing.T) {
			needFUSE(t)
			mnt := filepath.Join(dir, "mnt")
			os.Mkdir(mnt, 0o755)
			mountImage(t, "--no-undo", img, mnt)
			refused("snapshot of an image mounted --no-undo", "the mount at "+mnt, "'vhd umount "+mnt+"'")
			var info struct {
				InUse []inUseJSON `json:"in_use"`
			}
			vhdJSON(t, &info, "info", "--json", "-U", img)
			if len(info.InUse) != 1 || info.InUse[0].Kind != "mount" || info.InUse[0].Mountpoint != mnt || !info.InUse[0].Writing {
				t.Errorf("info --json of the mounted image: in_use %+v, want kind mount at %s, writing", info.InUse, mnt)
			}
			vhdOK(t, "umount", mnt)
			mountImage(t, img, mnt)
			refused("snapshot of an image mounted with an undo disk", chains.UndoPath(img), "the mount at "+mnt)
			vhdOK(t, "umount", "--discard", mnt)
		})
	}

	// Readers only: the snapshot goes ahead.
	srv, _ = startServe(t, nil, "--read-only", "--socket", sock, img)
	vhdOK(t, "snapshot", img, top)
	stopServe(t, srv)
	checkOK(t, img)
	checkOK(t, top)
}

// TestConvertOntoFolderOffersNoForce: --force never replaces a folder,
// so the refusal must not offer it; onto a regular file it does.
func TestConvertOntoFolderOffersNoForce(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	os.WriteFile(src, make([]byte, 1<<20), 0o644)
	folder := filepath.Join(dir, "out")
	os.Mkdir(folder, 0o755)
	r := vhdCode(t, exitFailed, "convert", "--to", "dynamic", src, folder)
	saysAll(t, "convert onto a folder", r, "not a regular file")
	noFlagOffered(t, "convert onto a folder", r, "--force")
	file := filepath.Join(dir, "out.vhd")
	os.WriteFile(file, []byte("x"), 0o644)
	r = vhdCode(t, exitFailed, "convert", "--to", "dynamic", src, file)
	saysAll(t, "convert onto a file", r, "--force")
}

// TestConvertForceKeepsParents: convert --force does not replace an image
// that has children or an undo disk.
func TestConvertForceKeepsParents(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	os.WriteFile(src, make([]byte, 1<<20), 0o644)
	base, top := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "top.vhd")
	vhdOK(t, "create", "--size", "1M", base)
	vhdOK(t, "snapshot", base, top)
	before := fileSum(t, base)
	r := vhdCode(t, exitFailed, "convert", "--to", "dynamic", "--force", src, base)
	saysAll(t, "convert --force onto a parent", r, top, "without their parent")
	if fileSum(t, base) != before {
		t.Fatal("convert --force replaced a parent")
	}
	checkOK(t, base)
	checkOK(t, top)
}
