package main

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"vhdkit/engine"
)

// TestMountOtherUsers: `vhd mount --allow-other` lets other users past
// FUSE, but they get only what the modes grant, and the kernel checks
// them: by default nothing (--umask 077), with --umask 022 reading.
// Without --allow-other they get nothing whatever --umask says. Run as
// root, the other user is uid 65534; the image is unchanged throughout.
func TestMountOtherUsers(t *testing.T) {
	needFUSE(t)
	if os.Getuid() != 0 {
		t.Skip("acting as another user (uid 65534) needs root")
	}
	needTools(t, "dd")
	dir := userDir(t, 0, 0) // every user can reach it
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "16M", img)
	writeSome(t, img)
	writeOneMBRPartition(t, img)
	before := fileSum(t, img)
	for _, tc := range []struct {
		name        string
		flags       []string
		mode        string // of disk and p1
		read, write bool   // what uid 65534 may do to them
	}{
		{"allow-other alone", []string{"--allow-other"}, "-rw-------", false, false},
		{"allow-other, umask 022", []string{"--allow-other", "--umask", "022"}, "-rw-r--r--", true, false},
		{"umask 000 without allow-other", []string{"--umask", "000"}, "-rw-rw-rw-", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mountImage(t, append(append([]string{"--no-undo"}, tc.flags...), img, mnt)...)
			for _, name := range []string{"disk", "p1", "info.json"} {
				file := filepath.Join(mnt, name)
				if fi, err := os.Stat(file); err != nil {
					t.Error(err)
				} else if want := tc.mode; name != "info.json" && fi.Mode().String() != want {
					t.Errorf("%s: mode %v, want %s", name, fi.Mode(), want)
				}
				asOther(t, "read "+name, tc.read, "dd", "if="+file, "of=/dev/null", "bs=4096", "count=1", "status=none")
				asOther(t, "write "+name, tc.write && name != "info.json", "dd", "if=/dev/urandom", "of="+file, "bs=4096", "seek=1", "count=1", "conv=notrunc", "status=none")
			}
			vhdOK(t, "umount", mnt)
		})
	}
	if fileSum(t, img) != before {
		t.Fatal("another user changed the image through the mount")
	}
	checkOK(t, img)
	vhdCode(t, exitUsage, "mount", "--umask", "0200", img, mnt)
	vhdCode(t, exitUsage, "mount", "--umask", "9", img, mnt)
}

// asOther runs a command as uid 65534 and checks it succeeds if allowed,
// and fails with EACCES (not some other error) if not.
func asOther(t *testing.T, what string, allowed bool, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	switch {
	case allowed && err != nil:
		t.Errorf("uid 65534 could not %s: %v\n%s", what, err, out)
	case !allowed && err == nil:
		t.Errorf("uid 65534 could %s", what)
	case !allowed && !strings.Contains(strings.ToLower(string(out)), syscall.EACCES.Error()):
		t.Errorf("uid 65534 %s: want %q, got %v\n%s", what, syscall.EACCES.Error(), err, out)
	}
}

// writeOneMBRPartition gives the image an MBR with one partition (p1),
// sectors 2048 to 10239, leaving the rest of sector 0 as it was.
func writeOneMBRPartition(t *testing.T, path string) {
	t.Helper()
	img, err := engine.Open(path, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sec := make([]byte, 512)
	if _, err := img.ReadAt(sec, 0); err != nil {
		t.Fatal(err)
	}
	sec[446+4] = 0x83
	binary.LittleEndian.PutUint32(sec[446+8:], 2048)
	binary.LittleEndian.PutUint32(sec[446+12:], 8192)
	sec[510], sec[511] = 0x55, 0xAA
	if _, err := img.WriteAt(sec, 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestParseUmask(t *testing.T) {
	for in, want := range map[string]uint32{"077": 0, "0077": 0, "022": 0o044, "027": 0o040, "002": 0o064, "0o000": 0o066, "033": 0o044} {
		if got, err := parseUmask(in); err != nil || got != want {
			t.Errorf("--umask %s: %#o, %v; want %#o", in, got, err, want)
		}
	}
	for _, bad := range []string{"0200", "700", "9", "1000", "", "-1", "rw"} {
		if _, err := parseUmask(bad); err == nil {
			t.Errorf("--umask %q accepted", bad)
		}
	}
}
