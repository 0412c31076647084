package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// vhdWithin runs vhd with a deadline; a run that outlives it is killed
// and fails the test (it blocked).
func vhdWithin(t *testing.T, d time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, vhdBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Errorf("vhd %s: still running after %v (blocked)", strings.Join(args, " "), d)
		r.code = -1
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run vhd %v: %v", args, err)
	}
	return r
}

// TestSpecialFilesFailAtOnce: every command that opens an image or a raw
// disk fails at once, naming what the path is, when it names a FIFO (an
// open of which blocked, deaf to Ctrl-C), a socket, /dev/null or a
// folder.
func TestSpecialFilesFailAtOnce(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.vhd")
	vhdOK(t, "create", "--size", "16M", good)
	child := filepath.Join(dir, "child.vhd")
	vhdOK(t, "create", "--type", "differencing", "--parent", good, child)
	fifo := filepath.Join(dir, "fifo.vhd")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	// An open that blocked on the FIFO (in a detached mount server, say)
	// is released by a writer coming and going.
	t.Cleanup(func() {
		if fd, err := unix.Open(fifo, unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			unix.Close(fd)
		}
	})
	sock := filepath.Join(dir, "sock.vhd")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	folder := filepath.Join(dir, "folder.vhd")
	os.Mkdir(folder, 0o755)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)

	for path, kind := range map[string]string{fifo: "named pipe (FIFO)", sock: "socket", "/dev/null": "character device", folder: "folder"} {
		out := filepath.Join(dir, "out.vhd")
		for _, args := range [][]string{
			{"info", path},
			{"info", "-U", path},
			{"check", path},
			{"repair", path},
			{"convert", "--to", "dynamic", path, out},
			{"convert", "--from", "raw", "--to", "dynamic", path, out},
			{"convert", "--from", "vhd", "--to", "raw", path, out},
			{"snapshot", path, filepath.Join(dir, "top.vhd")},
			{"create", "--type", "differencing", "--parent", path, filepath.Join(dir, "c.vhd")},
			{"set-parent", path, good},
			{"set-parent", child, path},
			{"merge", path},
			{"compact", path},
			{"resize", "--size", "32M", path},
			{"serve", "--socket", filepath.Join(dir, "s.sock"), path},
			{"mount", path, mnt},
			{"mount", "--no-undo", path, mnt},
		} {
			start := time.Now()
			r := vhdWithin(t, 20*time.Second, args...)
			if r.code == -1 {
				continue
			}
			if r.code != 1 || !strings.Contains(r.stderr, path+" is a "+kind) {
				t.Errorf("vhd %s: want exit 1 and %q, got %s", strings.Join(args, " "), path+" is a "+kind, r)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("vhd %s took %v to fail", strings.Join(args, " "), d)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("vhd %s made %s", strings.Join(args, " "), out)
				os.Remove(out)
			}
		}
	}
	checkOK(t, good)
	checkOK(t, child)
}

// TestConvertOutputSpecialFiles: convert writes only new image files; a
// destination that is a FIFO, a socket or /dev/null is refused at once,
// with and without --force.
func TestConvertOutputSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	makeRaw(t, src, 1<<20, region{off: 0, n: 4096})
	fifo := filepath.Join(dir, "fifo.raw")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock.raw")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, dst := range []string{fifo, sock, "/dev/null"} {
		for _, force := range [][]string{nil, {"--force"}} {
			args := append(append([]string{"convert", "--to", "raw"}, force...), src, dst)
			r := vhdWithin(t, 20*time.Second, args...)
			if r.code != 1 || !strings.Contains(r.stderr, dst) {
				t.Errorf("vhd %s: %s", strings.Join(args, " "), r)
			}
		}
	}
	if names := entries(t, dir); len(names) != 3 {
		t.Errorf("convert left files: %v", names)
	}
}
