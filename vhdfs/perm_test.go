package vhdfs

import (
	"crypto/sha256"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// otherUID is who tries to get into the mounts: nobody.
const otherUID, otherGID = 65534, 65534

// TestOtherUsers mounts as root and lets uid 65534 try to read and write
// disk, p1 and info.json. Only what the modes grant succeeds (the kernel
// checks them: default_permissions); without allow_other nothing does,
// whatever the modes. The image is unchanged and clean afterwards.
func TestOtherUsers(t *testing.T) {
	needFUSE(t)
	if os.Getuid() != 0 {
		t.Skip("acting as another user (uid 65534) needs root")
	}
	needDD(t)
	path := newImage(t, 16<<20)
	writeMBR(t, path)
	before := sha256.Sum256(sha(t, path))
	for _, tc := range []struct {
		name        string
		opts        Options
		data, info  string        // modes of disk and p1, of info.json
		read, write bool          // what uid 65534 may do to disk and p1
		refused     syscall.Errno // the answer to a write it may not do
	}{
		{"owner only", Options{AllowOther: true}, "-rw-------", "-r--------", false, false, syscall.EACCES},
		{"others read", Options{AllowOther: true, GroupOtherPerm: 0o044}, "-rw-r--r--", "-r--r--r--", true, false, syscall.EACCES},
		// The kernel's ro answers before the modes are looked at.
		{"read-only mount", Options{AllowOther: true, ReadOnly: true, GroupOtherPerm: 0o066}, "-r--r--r--", "-r--r--r--", true, false, syscall.EROFS},
		{"no allow_other", Options{GroupOtherPerm: 0o066}, "-rw-rw-rw-", "-r--r--r--", false, false, syscall.EACCES},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := openChain(t, path, tc.opts.ReadOnly)
			mnt, srv := mountedAt(t, c, tc.opts, reachableDir(t))
			for _, name := range []string{"disk", "p1", "info.json"} {
				file := filepath.Join(mnt, name)
				want, read, write := tc.data, tc.read, tc.write
				if name == "info.json" {
					want, write = tc.info, false
				}
				if fi, err := os.Stat(file); err != nil {
					t.Error(err)
				} else if fi.Mode().String() != want {
					t.Errorf("%s: mode %v, want %s", name, fi.Mode(), want)
				}
				tryAsOther(t, "read "+name, read, syscall.EACCES, "dd", "if="+file, "of=/dev/null", "bs=4096", "count=1", "status=none")
				tryAsOther(t, "write "+name, write, tc.refused, "dd", "if=/dev/urandom", "of="+file, "bs=4096", "seek=1", "count=1", "conv=notrunc", "status=none")
			}
			unmountRetry(srv)
			srv.Wait()
		})
	}
	if sha256.Sum256(sha(t, path)) != before {
		t.Fatal("a user who was not let in changed the image")
	}
	checkImage(t, path)

	// The write probe succeeds where the modes grant it.
	granted := newImage(t, 16<<20)
	writeMBR(t, granted)
	mnt, srv := mountedAt(t, openChain(t, granted, false), Options{AllowOther: true, GroupOtherPerm: 0o066}, reachableDir(t))
	tryAsOther(t, "write disk", true, 0, "dd", "if=/dev/urandom", "of="+filepath.Join(mnt, "disk"), "bs=4096", "count=1", "conv=notrunc,fsync", "status=none")
	unmountRetry(srv)
	srv.Wait()
	checkImage(t, granted)
}

// tryAsOther runs a command as uid 65534 and checks it succeeds if
// allowed, and fails saying refused (not some other error) if not.
func tryAsOther(t *testing.T, what string, allowed bool, refused syscall.Errno, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherGID}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	switch {
	case allowed && err != nil:
		t.Errorf("uid %d could not %s: %v\n%s", otherUID, what, err, out)
	case !allowed && err == nil:
		t.Errorf("uid %d could %s", otherUID, what)
	case !allowed && !strings.Contains(strings.ToLower(string(out)), refused.Error()):
		t.Errorf("uid %d %s: want %q, got %v\n%s", otherUID, what, refused.Error(), err, out)
	}
}

func needDD(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dd"); err != nil {
		t.Fatal("dd is missing (coreutils)")
	}
}

// reachableDir is an empty folder every user can reach (t.TempDir's
// parents are 0700), so only the mount's own modes decide who gets in.
func reachableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vhdfs-perm-")
	if err != nil {
		t.Fatal(err)
	}
	// Removed after the mount's own cleanup (registered later, run first).
	t.Cleanup(func() { os.Remove(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeMBR gives the image at path an MBR with one partition, p1.
func writeMBR(t *testing.T, path string) {
	t.Helper()
	mbr := make([]byte, sectorSize)
	mbr[446+4] = 0x83
	binary.LittleEndian.PutUint32(mbr[446+8:], 2048)
	binary.LittleEndian.PutUint32(mbr[446+12:], 8192)
	mbr[510], mbr[511] = 0x55, 0xAA
	c := openChain(t, path, false)
	if _, err := c.WriteAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewPerms(t *testing.T) {
	for _, tc := range []struct {
		groupOther uint32
		ro         bool
		want       perms
	}{
		{0, false, perms{data: 0o600, info: 0o400, dir: 0o500}},
		{0o044, false, perms{data: 0o644, info: 0o444, dir: 0o555}},
		{0o060, false, perms{data: 0o660, info: 0o440, dir: 0o550}},
		{0o066, true, perms{data: 0o444, info: 0o444, dir: 0o555}},
	} {
		if got, err := newPerms(tc.groupOther, tc.ro); err != nil || got != tc.want {
			t.Errorf("newPerms(%#o, %v) = %+v, %v; want %+v", tc.groupOther, tc.ro, got, err, tc.want)
		}
	}
	for _, bad := range []uint32{0o100, 0o011, 0o600, 0o1000} {
		if _, err := newPerms(bad, false); err == nil {
			t.Errorf("newPerms(%#o) accepted bits it cannot grant", bad)
		}
	}
}
