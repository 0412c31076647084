package service

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/nbdserve"
)

// The host tests serve real images to real clients (nbdinfo, nbdsh) and
// mount them over the kernel's FUSE; they skip only where the machine
// cannot mount FUSE.

func needFUSE(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("this machine cannot mount FUSE filesystems: %v", err)
	}
	f.Close()
	if os.Getuid() != 0 {
		need(t, "fusermount3")
	}
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/setup.sh", tool)
		}
	}
}

// client runs an NBD client; nbdsh needs the system python3.
func client(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin:"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newChain creates a dynamic image and opens it for writing.
func newChain(t *testing.T, dir, name string) (*chains.Chain, string) {
	t.Helper()
	p := filepath.Join(dir, name)
	img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeDynamic, Size: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := chains.Open(p, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

// released checks that nobody holds path open for writing any more
// (the host closed it), then that it passes the consistency check.
func released(t *testing.T, path string) {
	t.Helper()
	c, err := chains.Open(path, chains.Options{})
	if err != nil {
		t.Fatalf("%s is still held: %v", path, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := engine.CheckPath(path, engine.CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	for _, p := range rep.Problems {
		t.Errorf("check %s: %s", path, p)
	}
}

func readImage(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	c, err := chains.Open(path, chains.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, n)
	if _, err := c.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func gone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s is still there after teardown: %v", path, err)
	}
}

// runHost runs h until the returned stop is called, which returns Run's
// error.
func runHost(t *testing.T, h *Host) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	stopped := false
	stop = func() error {
		cancel()
		select {
		case err := <-done:
			stopped = true
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return 30 s after its context ended")
			return nil
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	return stop
}

// TestHostTearsDownEverything: a host serving one image over NBD and a
// FUSE mount it made the folders for, another over NBD alone, with a
// state file. Written through both, then stopped: Run returns once the
// socket, the mount, the folders it made and the state file are gone
// and the images are closed (their locks free) and hold every write.
func TestHostTearsDownEverything(t *testing.T) {
	needFUSE(t)
	need(t, "nbdsh")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	dir := t.TempDir()
	a, pa := newChain(t, dir, "a.vhd")
	b, pb := newChain(t, dir, "b.vhd")
	mnt := filepath.Join(dir, "fuse", "a") // neither folder exists
	sock := filepath.Join(dir, "s.sock")

	h := New(Config{})
	if _, err := h.AddExport(context.Background(), "a", a, ExportOptions{Description: "a.vhd", FUSE: &FUSEOptions{Dir: mnt, MakeDir: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.AddExport(context.Background(), "b", b, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	st := &MountState{Mountpoint: mnt, Image: pa, Mode: ModeNoUndo, PID: os.Getpid()}
	if err := h.SaveState(st); err != nil {
		t.Fatal(err)
	}
	if err := h.ListenUnix(sock); err != nil {
		t.Fatal(err)
	}
	want := []string{"nbd+unix:///a?socket=" + sock, "nbd+unix:///b?socket=" + sock}
	if got := h.URIs(); !slices.Equal(got, want) {
		t.Errorf("URIs %v, want %v", got, want)
	}
	stop := runHost(t, h)

	// NBD writes a and b (no flush: teardown must do it); FUSE reads a.
	for _, name := range []string{"a", "b"} {
		client(t, "nbdsh", "-u", "nbd+unix:///"+name+"?socket="+sock, "-c", `h.pwrite(b"`+name+`" * 65536, 1 << 20)`)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "disk"))
	if err != nil || !bytes.Equal(got[1<<20:1<<20+65536], bytes.Repeat([]byte("a"), 65536)) {
		t.Fatalf("reading the NBD write through FUSE: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	gone(t, sock)
	gone(t, StatePath(mnt))
	gone(t, mnt)
	gone(t, filepath.Dir(mnt))
	if IsMounted(mnt) {
		t.Error("the FUSE mount is still mounted")
	}
	for _, img := range []struct{ path, name string }{{pa, "a"}, {pb, "b"}} {
		released(t, img.path)
		if got := readImage(t, img.path, 1<<20, 65536); !bytes.Equal(got, bytes.Repeat([]byte(img.name), 65536)) {
			t.Errorf("the write to %s is not in the image", img.name)
		}
	}
}

// TestHostExportsAtRunTime: an export added while the host runs is
// listed and mounted at once; removing it drops it from the list,
// unmounts it, removes the folder made for it and closes its image,
// while the other export is served throughout.
func TestHostExportsAtRunTime(t *testing.T) {
	needFUSE(t)
	need(t, "nbdinfo")
	dir := t.TempDir()
	a, pa := newChain(t, dir, "a.vhd")
	b, pb := newChain(t, dir, "b.vhd")
	sock := filepath.Join(dir, "s.sock")
	h := New(Config{})
	if _, err := h.AddExport(context.Background(), "a", a, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := h.ListenUnix(sock); err != nil {
		t.Fatal(err)
	}
	stop := runHost(t, h)
	list := func() string { return client(t, "nbdinfo", "--list", "nbd+unix:///?socket="+sock) }

	mnt := filepath.Join(dir, "mnt-b")
	ex, err := h.AddExport(context.Background(), "b", b, ExportOptions{FUSE: &FUSEOptions{Dir: mnt, MakeDir: true}})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Mountpoint != mnt || !IsMounted(mnt) {
		t.Fatalf("the added export is not mounted at %s", mnt)
	}
	if out := list(); !strings.Contains(out, `export="b"`) {
		t.Fatalf("nbdinfo --list does not show the added export:\n%s", out)
	}
	if _, err := h.AddExport(context.Background(), "b", b, ExportOptions{}); err == nil {
		t.Error("a second export named b was accepted")
	}
	if err := h.RemoveExport(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if out := list(); strings.Contains(out, `export="b"`) || !strings.Contains(out, `export="a"`) {
		t.Fatalf("nbdinfo --list after the removal:\n%s", out)
	}
	gone(t, mnt)
	released(t, pb)
	if err := h.RemoveExport(context.Background(), "b"); err == nil {
		t.Error("removing b twice succeeded")
	}
	client(t, "nbdinfo", "nbd+unix:///a?socket="+sock)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	released(t, pa)
}

// TestHostStopOnUnmount: a mount server ends when its mount is unmounted
// from outside (vhd umount), and then closes its image.
func TestHostStopOnUnmount(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	c, p := newChain(t, dir, "disk.vhd")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	h := New(Config{StopOnUnmount: true})
	if _, err := h.AddExport(context.Background(), "disk", c, ExportOptions{FUSE: &FUSEOptions{Dir: mnt}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(context.Background()) }()
	if err := unmountPoint(mnt, false); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not end after its mount was unmounted")
	}
	if _, err := os.Stat(mnt); err != nil {
		t.Errorf("the mount point the host did not make is gone: %v", err)
	}
	released(t, p)
}

// TestHostCloseWithoutRun: a setup that fails half-way is undone by
// Close: listener, socket, mount and disks.
func TestHostCloseWithoutRun(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	c, p := newChain(t, dir, "disk.vhd")
	mnt, sock := filepath.Join(dir, "m", "n"), filepath.Join(dir, "s.sock")
	h := New(Config{NBD: &nbdserve.Server{}})
	if _, err := h.AddExport(context.Background(), "disk", c, ExportOptions{FUSE: &FUSEOptions{Dir: mnt, MakeDir: true}}); err != nil {
		t.Fatal(err)
	}
	if err := h.ListenUnix(sock); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	gone(t, sock)
	gone(t, filepath.Join(dir, "m"))
	released(t, p)
	if err := h.Run(context.Background()); err == nil {
		t.Error("Run after Close succeeded")
	}
	if _, err := h.AddExport(context.Background(), "x", c, ExportOptions{}); err == nil {
		t.Error("AddExport after Close succeeded")
	}
}

// TestAddExportFailureLeavesDisk: when the FUSE mount fails the disk is
// still the caller's, open, and nothing is left made or mounted.
func TestAddExportFailureLeavesDisk(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	c, p := newChain(t, dir, "disk.vhd")
	h := New(Config{})
	if _, err := h.AddExport(context.Background(), "disk", c, ExportOptions{FUSE: &FUSEOptions{Dir: filepath.Join(dir, "missing")}}); err == nil {
		t.Fatal("a mount on a missing folder succeeded")
	}
	if _, err := c.WriteAt([]byte("still mine"), 0); err != nil {
		t.Fatalf("the disk was closed: %v", err)
	}
	if names := h.ExportNames(); len(names) != 0 {
		t.Errorf("exports after a failed add: %v", names)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	released(t, p)
}
