package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

// The state folder tests plant what another user could, then run vhd as
// its victim. Making a folder another user owns needs root (chown); the
// victim is root itself, or uid 65534 for the $TMPDIR folder (root's
// is /run/vhdkit).

const nobody = 65534

func needChown(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("planting a folder another user owns needs root (chown)")
	}
}

// vhdAs runs the vhd binary bin as uid, with env as the whole
// environment.
func vhdAs(t *testing.T, bin string, uid int, env []string, args ...string) result {
	t.Helper()
	// Code that does not refuse may serve forever: bound it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Dir = "/"
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run vhd %v: %v", args, err)
	}
	return r
}

// envWithout is this process's environment without the named variables,
// plus set.
func envWithout(drop []string, set ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !contains(drop, name) {
			env = append(env, kv)
		}
	}
	return append(env, set...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// refused checks that vhd failed (exit 1) saying want, and touched
// nothing it should not have.
func refused(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != exitFailed || !strings.Contains(r.stderr, want) {
		t.Errorf("want exit 1 saying %q, got %s", want, r)
	}
}

// TestStateFolderRefused plants, in place of the state folder
// ($XDG_RUNTIME_DIR/vhdkit) or of its mounts/, what another user could:
// a folder of theirs, a symlink to a folder of the victim's, a folder
// open to others, a file. vhd mount, mount --list and umount refuse it,
// saying what to do, and write nothing through it.
func TestStateFolderRefused(t *testing.T) {
	needChown(t)
	dir := t.TempDir()
	// mnt is not made: code that did not check the folder fails at the
	// mount point instead of mounting.
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	vhdOK(t, "create", "--size", "1M", img)
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, path, victim string)
		says  string
	}{
		{"owned by another user", func(t *testing.T, path, _ string) {
			mkdir(t, path, 0o700)
			chown(t, path, nobody)
		}, "belongs to uid 65534, not to you"},
		{"symlink to the victim's folder", func(t *testing.T, path, victim string) {
			symlink(t, victim, path)
		}, "is a symlink"},
		{"open to others", func(t *testing.T, path, _ string) {
			mkdir(t, path, 0o755)
		}, "has mode 0755, not 0700"},
		{"a file", func(t *testing.T, path, _ string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a folder"},
	} {
		for _, level := range []string{"vhdkit", "vhdkit/mounts"} {
			t.Run(tc.name+" at "+level, func(t *testing.T) {
				run, victim := t.TempDir(), t.TempDir()
				t.Setenv("XDG_RUNTIME_DIR", run)
				if level != "vhdkit" {
					mkdir(t, filepath.Join(run, "vhdkit"), 0o700)
				}
				tc.plant(t, filepath.Join(run, level), victim)
				for _, args := range [][]string{{"mount", "--list"}, {"mount", img, mnt}, {"umount", "--discard", mnt}} {
					refused(t, vhd(t, args...), tc.says)
				}
				if names := entries(t, victim); len(names) != 0 {
					t.Errorf("vhd wrote %v into the folder a symlink pointed at", names)
				}
			})
		}
	}
}

// TestStateFileSymlinks: a symlink planted where vhd writes a mount's
// log or state, or reads its state, is never followed: the file it
// points at keeps its contents.
func TestStateFileSymlinks(t *testing.T) {
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "1M", img)
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	t.Cleanup(func() { // code that follows the link mounts
		if service.IsMounted(mnt) {
			vhd(t, "umount", mnt)
		}
	})
	if _, err := service.MountsFolder(true); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "precious")
	const precious = "the victim's data\n"
	if err := os.WriteFile(victim, []byte(precious), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, stateFile := service.LogPath(mnt), service.StatePath(mnt)
	intact := func() {
		t.Helper()
		if b, err := os.ReadFile(victim); err != nil || string(b) != precious {
			t.Fatalf("the file behind the symlink changed: %q %v", b, err)
		}
	}

	// The log a detached mount server writes to.
	symlink(t, victim, logFile)
	refused(t, vhd(t, "mount", img, mnt), "is a symlink")
	intact()

	// The state file umount and the listing read.
	symlink(t, victim, stateFile)
	refused(t, vhd(t, "umount", mnt), "is a symlink")
	intact()

	// Saving replaces the link itself, never writes through it.
	st := &service.MountState{Mountpoint: mnt, Image: img, Mode: service.ModeReadOnly}
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}
	intact()
	if fi, err := os.Lstat(stateFile); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file after save: %v %v", fi, err)
	}
	if got, err := service.LoadMountState(mnt); err != nil || got.Image != img {
		t.Fatalf("state read back: %+v %v", got, err)
	}
}

// TestForgedStateFile: a state file another user wrote, claiming a
// mount of the victim's image in undo mode, must not steer `vhd umount
// --discard` into deleting the image's undo disk.
func TestForgedStateFile(t *testing.T) {
	needChown(t)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "1M", img)
	c, _, err := chains.OpenUndo(img, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A change, so the undo disk is kept at close (an empty one goes).
	if _, err := c.WriteAt(bytes.Repeat([]byte{7}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	undo := chains.UndoPath(img)
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	if _, err := service.MountsFolder(true); err != nil {
		t.Fatal(err)
	}
	forged, _ := json.Marshal(service.MountState{Mountpoint: mnt, Image: img, Mode: service.ModeUndo, UndoDisk: undo})
	path := service.StatePath(mnt)
	if err := os.WriteFile(path, forged, 0o644); err != nil {
		t.Fatal(err)
	}
	chown(t, path, nobody)
	refused(t, vhd(t, "umount", "--discard", mnt), "belongs to uid 65534, not to you")
	if _, err := os.Stat(undo); err != nil {
		t.Fatalf("the undo disk is gone: %v", err)
	}
	if r := vhdOK(t, "mount", "--list"); !strings.Contains(r.stdout, "nothing is mounted") {
		t.Errorf("the listing shows a forged mount:\n%s", r)
	}
	checkOK(t, undo)
}

// TestTmpdirStateFolder: without XDG_RUNTIME_DIR a user's state and
// sockets go in $TMPDIR/vhdkit-UID, made 0700 and theirs; one made first
// by someone else is refused. The user is uid 65534, the "someone else"
// root, $TMPDIR a sticky folder everyone writes, like /tmp.
func TestTmpdirStateFolder(t *testing.T) {
	needChown(t)
	need(t, "nbdinfo")
	tmp := t.TempDir()
	if err := os.Chmod(tmp, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	reachable(t, tmp)
	env := envWithout([]string{"XDG_RUNTIME_DIR", "TMPDIR"}, "TMPDIR="+tmp)
	private := filepath.Join(tmp, "vhdkit-65534")
	bin := filepath.Join(tmp, "vhd") // one uid 65534 may run
	runOK(t, "", "cp", vhdBin, bin)

	// Fresh: vhd serve's default socket goes in the private folder.
	img := filepath.Join(tmp, "disk.vhd")
	vhdOK(t, "create", "--size", "1M", img)
	chown(t, img, nobody)
	uri, stop := serveAs(t, bin, nobody, env, "--read-only", img)
	if !strings.Contains(uri, "socket="+private+"/") {
		t.Errorf("default socket outside %s: %s", private, uri)
	}
	if fi, err := os.Lstat(private); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 || owner(fi) != nobody {
		t.Errorf("%s: %v %v", private, fi, err)
	}
	if out, err := clientCmd("nbdinfo", "--size", uri).CombinedOutput(); err != nil {
		t.Errorf("nbdinfo %s: %v\n%s", uri, err, out)
	}
	stop()

	// Made by someone else first.
	if err := os.RemoveAll(private); err != nil {
		t.Fatal(err)
	}
	// Open to the victim, so they could use it; or closed.
	for _, mode := range []os.FileMode{0o777, 0o700} {
		os.Remove(private)
		mkdir(t, private, mode)
		refused(t, vhdAs(t, bin, nobody, env, "mount", "--list"), "belongs to uid 0, not to you (uid 65534)")
		refused(t, vhdAs(t, bin, nobody, env, "serve", "--read-only", img), "belongs to uid 0, not to you (uid 65534)")
		if names := entries(t, private); len(names) != 0 {
			t.Errorf("vhd used a folder someone else made: %v", names)
		}
	}
}

// serveAs starts `bin serve` as uid and returns the URI it prints and a
// function that stops it (SIGTERM), also run at the end of the test.
func serveAs(t *testing.T, bin string, uid int, env []string, args ...string) (string, func()) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("vhd serve printed no URI: %v", err)
	}
	return strings.TrimSpace(line), stop
}

func mkdir(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Lchown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func owner(fi os.FileInfo) int { return int(fi.Sys().(*syscall.Stat_t).Uid) }

// reachable opens the folders above dir to everyone, so another user
// can reach it (t.TempDir's parent is 0700).
func reachable(t *testing.T, dir string) {
	t.Helper()
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
}
