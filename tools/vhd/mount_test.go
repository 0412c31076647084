package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/service"
)

// The mount tests run `vhd mount` as a user would, against the real
// kernel FUSE, sfdisk, mkfs.ext4, mkfs.ntfs, ntfs-3g, losetup, e2fsck,
// ntfsfix and qemu-img. They skip only where the machine cannot mount
// FUSE (no /dev/fuse) or, for --fs, is not root.

func needFUSE(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("this machine cannot mount FUSE filesystems: %v", err)
	}
	f.Close()
	if os.Getuid() != 0 {
		needTools(t, "fusermount3")
	}
	// Each test keeps its mount state to itself.
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("vhd mount --fs needs root (loop devices and kernel mounts)")
	}
}

// needTools fails (not skips) when a peer is missing: scripts/setup.sh
// installs them all.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run scripts/setup.sh", tool)
		}
	}
}

// mountImage runs vhd mount and makes sure the mount goes away at the
// end of the test whatever happens.
func mountImage(t *testing.T, args ...string) result {
	t.Helper()
	r := vhdOK(t, append([]string{"mount"}, args...)...)
	mnt := args[len(args)-1]
	t.Cleanup(func() {
		if service.IsMounted(absPath(t, mnt)) {
			vhd(t, "umount", mnt)
		}
	})
	return r
}

func absPath(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func runOK(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestMountPartitionFormatCommit is the VHDMount workflow end to end:
// partition a fresh image through the mounted disk, make ext4 and NTFS
// on the two partitions, mount them with --fs, write files, commit;
// mount again and find the files; then qemu-img, e2fsck and ntfsfix
// agree the image and its filesystems are clean.
func TestMountPartitionFormatCommit(t *testing.T) {
	needFUSE(t)
	needRoot(t)
	needTools(t, "sfdisk", "mkfs.ext4", "mkfs.ntfs", "ntfs-3g", "ntfsfix", "e2fsck", "losetup", "blkid", "qemu-img")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "128M", img)

	// Partition and format through the files, with an undo disk,
	// committed at the end.
	r := mountImage(t, img, mnt)
	if !strings.Contains(r.stdout, chains.UndoPath(img)) {
		t.Errorf("vhd mount does not say where the undo disk is:\n%s", r)
	}
	runOK(t, "label: dos\n,64M,83\n,,7\n", "sfdisk", "-q", "--no-reread", "--no-tell-kernel", filepath.Join(mnt, "disk"))
	if names := entries(t, mnt); strings.Join(names, " ") != "disk info.json p1 p2" {
		t.Fatalf("after sfdisk: %v", names)
	}
	runOK(t, "", "mkfs.ext4", "-q", "-F", filepath.Join(mnt, "p1"))
	runOK(t, "", "mkfs.ntfs", "-f", "-Q", "-F", "-q", filepath.Join(mnt, "p2"))
	vhdOK(t, "umount", "--commit", mnt)
	if _, err := os.Stat(chains.UndoPath(img)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("undo disk still there after --commit: %v", err)
	}

	// Mount the filesystems, write, commit.
	r = mountImage(t, "--fs", img, mnt)
	for _, want := range []string{"p1: ext4", "p2: ntfs"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("vhd mount --fs does not report %q:\n%s", want, r)
		}
	}
	ext4File, ntfsFile := filepath.Join(mnt, "fs/p1/hello.txt"), filepath.Join(mnt, "fs/p2/Windows.txt")
	big := bytes.Repeat([]byte("vhd mount --fs "), 200000) // 3 MB
	for _, f := range []string{ext4File, ntfsFile} {
		if err := os.WriteFile(f, big, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var list []service.MountState
	vhdJSON(t, &list, "mount", "--list", "--json")
	if len(list) != 1 || list[0].Image != img || len(list[0].FS) != 2 || !list[0].Alive {
		t.Fatalf("vhd mount --list: %+v", list)
	}
	vhdOK(t, "umount", "--commit", mnt)
	if out := runOK(t, "", "losetup", "-a"); strings.Contains(out, mnt) {
		t.Fatalf("loop devices left behind:\n%s", out)
	}
	checkOK(t, img)

	// Again, read-only: the files are in the image.
	before := fileSum(t, img)
	mountImage(t, "--read-only", "--fs", img, mnt)
	for _, f := range []string{ext4File, ntfsFile} {
		got, err := os.ReadFile(f)
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("%s after commit and remount: %v", f, err)
		}
	}
	if err := os.WriteFile(filepath.Join(mnt, "fs/p1/no.txt"), nil, 0o644); err == nil {
		t.Fatal("wrote to a --read-only filesystem")
	}
	vhdOK(t, "umount", mnt)
	if fileSum(t, img) != before {
		t.Fatal("a --read-only mount changed the image")
	}

	// qemu reads the same disk; e2fsck and ntfsfix find the
	// filesystems clean.
	raw := filepath.Join(dir, "disk.raw")
	qemuImg(t, "convert", "-f", "vpc", "-O", "raw", img, raw)
	p1, p2 := extract(t, raw, 1<<20, 64<<20), extract(t, raw, 65<<20, 63<<20)
	runOK(t, "", "e2fsck", "-fn", p1)
	runOK(t, "", "ntfsfix", "-n", p2)
	checkOK(t, img)
}

// extract copies [off, off+n) of a file into a file of its own.
func extract(t *testing.T, path string, off, n int64) string {
	t.Helper()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := path + "." + strings.ReplaceAll(time.Now().Format("150405.000000000"), ".", "")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, io.NewSectionReader(src, off, n)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestMountUndoModes: writes through the default mount go to the undo
// disk; the image is never written; --discard leaves it byte-identical;
// without either flag the undo disk is kept; --read-only refuses writes.
func TestMountUndoModes(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "32M", img)
	data := writeSome(t, img)
	before := fileSum(t, img)
	newData := bytes.Repeat([]byte("undo me "), 50000)

	writeDisk := func() {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(mnt, "disk"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(newData, 3<<20); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}

	// Keep: the undo disk stays and holds the write.
	mountImage(t, img, mnt)
	writeDisk()
	r := vhdOK(t, "umount", mnt)
	if !strings.Contains(r.stdout, "kept in the undo disk "+chains.UndoPath(img)) {
		t.Errorf("umount does not say where the undo disk is:\n%s", r)
	}
	if fileSum(t, img) != before {
		t.Fatal("the undo mount wrote the image")
	}
	checkOK(t, chains.UndoPath(img))

	// Mount again: the undo disk's changes are there; discard them.
	mountImage(t, img, mnt)
	got := make([]byte, len(newData))
	f, _ := os.Open(filepath.Join(mnt, "disk"))
	f.ReadAt(got, 3<<20)
	f.Close()
	if !bytes.Equal(got, newData) {
		t.Fatal("the kept undo disk's changes are not seen on the next mount")
	}
	writeDisk()
	vhdOK(t, "umount", "--discard", mnt)
	if fileSum(t, img) != before {
		t.Fatal("discard did not leave the image byte-identical")
	}
	if _, err := os.Stat(chains.UndoPath(img)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the undo disk survived --discard")
	}

	// Read-only refuses writes and never writes the image.
	mountImage(t, "--read-only", img, mnt)
	if _, err := os.OpenFile(filepath.Join(mnt, "disk"), os.O_RDWR, 0); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("open for writing on a --read-only mount: %v", err)
	}
	vhdCode(t, exitUsage, "umount", "--commit", mnt) // nothing to commit
	vhdOK(t, "umount", mnt)
	if fileSum(t, img) != before {
		t.Fatal("the read-only mount wrote the image")
	}
	if got := readBack(t, img, 3<<20+512, len(data)); !bytes.Equal(got, data) {
		t.Fatal("the image's data changed")
	}
	// Nothing is listed any more.
	if r := vhdOK(t, "mount"); !strings.Contains(r.stdout, "nothing is mounted") {
		t.Fatalf("vhd mount listing after umount:\n%s", r)
	}
	checkOK(t, img)
}

// TestMountKilledServer: a server killed with SIGKILL leaves a dead
// mount and an image (and undo disk) that open and pass check with every
// fsync'ed write in place; vhd umount cleans the dead mount and can
// still commit.
func TestMountKilledServer(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "64M", img)
	mountImage(t, img, mnt)
	var list []service.MountState
	vhdJSON(t, &list, "mount", "--list", "--json")
	if len(list) != 1 || list[0].PID <= 0 {
		t.Fatalf("listing: %+v", list)
	}
	f, err := os.OpenFile(filepath.Join(mnt, "disk"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	synced := bytes.Repeat([]byte("durable "), 1<<17) // 1 MiB
	if _, err := f.WriteAt(synced, 5<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// Unsynced writes in flight when the server dies.
	f.WriteAt(bytes.Repeat([]byte{7}, 4<<20), 20<<20)
	f.Close()
	if err := syscall.Kill(list[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; service.ProcessAlive(list[0].PID) && i < 100; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	// The kernel answers ENOTCONN, or ECONNABORTED when it aborted the
	// connection itself.
	if _, err := os.ReadDir(mnt); !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("the dead mount answers %v, want ENOTCONN or ECONNABORTED", err)
	}
	if r := vhdOK(t, "mount", "--list"); !strings.Contains(r.stdout, "server gone") {
		t.Errorf("the listing does not show the dead server:\n%s", r)
	}
	// A killed writer may leave blocks it allocated but never flushed:
	// repair cuts them, and then check is clean (the guarantee).
	for _, p := range []string{img, chains.UndoPath(img)} {
		rep, err := engine.CheckPath(p, engine.CheckOptions{Bitmaps: true})
		if err == nil && !rep.OK() {
			if _, err := engine.Repair(p, engine.RepairOptions{Bitmaps: true}); err != nil {
				t.Fatalf("repair %s after SIGKILL: %v", p, err)
			}
			rep, err = engine.CheckPath(p, engine.CheckOptions{Bitmaps: true})
		}
		if err != nil || !rep.OK() {
			t.Fatalf("check %s after SIGKILL (and repair): %v %+v", p, err, rep)
		}
	}
	r := vhdOK(t, "umount", "--commit", mnt)
	if !strings.Contains(r.stderr, "gone") {
		t.Errorf("umount of a dead mount says nothing about it:\n%s", r)
	}
	if service.IsMounted(absPath(t, mnt)) {
		t.Fatal("the dead mount is still there")
	}
	if got := readBack(t, img, 5<<20, len(synced)); !bytes.Equal(got, synced) {
		t.Fatal("an fsync'ed write was lost with the server")
	}
	if r := vhdOK(t, "mount"); !strings.Contains(r.stdout, "nothing is mounted") {
		t.Fatalf("listing after cleanup:\n%s", r)
	}
	checkOK(t, img)
}

func TestMountUsage(t *testing.T) {
	vhdCode(t, exitUsage, "mount", "--read-only", "--no-undo", "a.vhd", "m")
	vhdCode(t, exitUsage, "umount", "--commit", "--discard", "m")
	vhdCode(t, exitUsage, "mount", "a.vhd")
	r := vhdCode(t, exitFailed, "umount", t.TempDir())
	if !strings.Contains(r.stderr, "not a 'vhd mount' mount point") {
		t.Errorf("umount of a plain folder:\n%s", r)
	}
}

// TestMountFSKinds: --fs mounts xfs and btrfs with the kernel and reports
// a vfat partition (no driver on this machine) without failing.
func TestMountFSKinds(t *testing.T) {
	needFUSE(t)
	needRoot(t)
	needTools(t, "sfdisk", "mkfs.xfs", "mkfs.btrfs", "mkfs.vfat", "mcopy", "losetup", "blkid")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "600M", img)
	mountImage(t, "--no-undo", img, mnt)
	runOK(t, "label: gpt\n,16M\n,320M\n,,\n", "sfdisk", "-q", "--no-reread", "--no-tell-kernel", filepath.Join(mnt, "disk"))
	runOK(t, "", "mkfs.vfat", filepath.Join(mnt, "p1"))
	runOK(t, "", "mkfs.xfs", "-q", filepath.Join(mnt, "p2"))
	runOK(t, "", "mkfs.btrfs", "-q", filepath.Join(mnt, "p3"))
	vhdOK(t, "umount", mnt)

	r := mountImage(t, "--no-undo", "--fs", img, mnt)
	for _, want := range []string{"p1: not mounted: vfat: this machine cannot mount it", "p2: xfs", "p3: btrfs"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("vhd mount --fs does not say %q:\n%s", want, r)
		}
	}
	for _, p := range []string{"p2", "p3"} {
		if err := os.WriteFile(filepath.Join(mnt, "fs", p, "f.txt"), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vhdOK(t, "umount", mnt)
	// The vfat partition is still reachable with mtools, offline.
	mountImage(t, "--read-only", img, mnt)
	runOK(t, "", "mdir", "-i", filepath.Join(mnt, "p1"), "::")
	vhdOK(t, "umount", mnt)
	checkOK(t, img)
}

// TestMountAsUser: a user who is not root mounts through fusermount3,
// owns what the mount shows, writes through it, and commits. Run as
// root, the test becomes the user nobody for vhd and for every access
// to the mount (FUSE lets no one else in, root included).
func TestMountAsUser(t *testing.T) {
	needFUSE(t)
	if os.Getuid() != 0 {
		t.Skip("already not root: the other mount tests are user mounts")
	}
	needTools(t, "fusermount3", "dd", "stat")
	const uid, gid = 65534, 65534 // nobody, nogroup
	dir := userDir(t, uid, gid)
	bin := filepath.Join(dir, "vhd")
	runOK(t, "", "cp", vhdBin, bin)
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	asUserErr := func(name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_RUNTIME_DIR="+filepath.Join(dir, "run"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	asUser := func(name string, args ...string) string {
		t.Helper()
		out, err := asUserErr(name, args...)
		if err != nil {
			t.Fatalf("as uid %d: %s %s: %v\n%s", uid, name, strings.Join(args, " "), err, out)
		}
		return out
	}
	asUser("mkdir", "-m", "0700", "run", "mnt")
	asUser(bin, "create", "--size", "16M", img)

	// A device only root may open: one clear error that says so, once.
	setFUSEDeviceMode(t, 0o600)
	out, err := asUserErr(bin, "mount", img, mnt)
	if err == nil || strings.Count(out, "cannot open /dev/fuse (permission denied") != 1 {
		t.Fatalf("vhd mount by a user who cannot open /dev/fuse: %v\n%s", err, out)
	}

	setFUSEDeviceMode(t, 0o666)
	asUser(bin, "mount", img, mnt)
	t.Cleanup(func() {
		if service.IsMounted(mnt) {
			exec.Command("fusermount3", "-u", "-z", mnt).Run()
		}
	})
	// The folder, the disk and info.json: owner and modification time.
	for _, line := range strings.Split(strings.TrimSpace(asUser("stat", "-c", "%n %u %g %Y",
		mnt, filepath.Join(mnt, "disk"), filepath.Join(mnt, "info.json"))), "\n") {
		f := strings.Fields(line)
		if f[1] != "65534" || f[2] != "65534" {
			t.Errorf("%s belongs to %s:%s, not to the user who mounted it", f[0], f[1], f[2])
		}
		if mtime, _ := strconv.ParseInt(f[3], 10, 64); time.Since(time.Unix(mtime, 0)) > time.Hour {
			t.Errorf("%s's time is %s, not the mount's", f[0], time.Unix(mtime, 0))
		}
	}
	data := bytes.Repeat([]byte("user wrote this "), 4096) // 64 KiB
	src := filepath.Join(dir, "data")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	asUser("dd", "if="+src, "of="+filepath.Join(mnt, "disk"), "bs=64k", "seek=5", "conv=notrunc,fsync", "status=none")
	out = asUser(bin, "umount", "--commit", mnt)
	if !strings.Contains(out, "committed") {
		t.Fatalf("umount --commit as the user:\n%s", out)
	}
	if got := readBack(t, img, 5*64<<10, len(data)); !bytes.Equal(got, data) {
		t.Fatal("the user's write is not in the image after --commit")
	}
	checkOK(t, img)
}

// setFUSEDeviceMode sets /dev/fuse's mode for the test: 0666 is what
// Debian's udev rule gives it, 0600 what some containers do. The first
// call's mode is put back at the end. Root, which the other tests run
// as, opens it either way.
func setFUSEDeviceMode(t *testing.T, mode os.FileMode) {
	t.Helper()
	st, err := os.Stat("/dev/fuse")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod("/dev/fuse", mode); err != nil {
		t.Skipf("cannot change /dev/fuse's mode on this machine: %v", err)
	}
	t.Cleanup(func() { os.Chmod("/dev/fuse", st.Mode().Perm()) })
}

// userDir is a fresh folder owned by uid:gid that they can reach (every
// folder above it is searchable).
func userDir(t *testing.T, uid, gid int) string {
	t.Helper()
	base, err := os.MkdirTemp("", "vhd-user-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "home")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}
