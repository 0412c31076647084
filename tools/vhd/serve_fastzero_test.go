package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/engine"
)

// TestServeFastZeroThroughChain: vhd serve exports every image as a
// chain, so FAST_ZERO must be answered for the chain: it succeeds where
// nothing has to be written (a single dynamic image's whole blocks; a
// snapshot's blocks with no data below) and fails at once with ENOTSUP
// where the zeros must be written (over a parent's data). It always
// failed before, the chain hiding what the image could answer.
func TestServeFastZeroThroughChain(t *testing.T) {
	need(t, "nbdsh")
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "top.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: 16 << 20, BlockSize: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte(strings.Repeat("base", 1024)), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	script := func(sock string) []string {
		return []string{"-c", "h.set_export_name('')", "-c", "h.connect_unix('" + sock + "')", "-c", `
import nbd
def zero(off, n):
    try:
        h.zero(n, off, nbd.CMD_FLAG_FAST_ZERO)
        return "ok"
    except nbd.Error as ex:
        return ex.errno
assert h.can_fast_zero()
` + "print(" + "zero(0, 2 << 20), zero(4 << 20, 8 << 20), zero(2 << 20, 4096))"}
	}
	// The base alone: a whole block of data is freed, holes stay holes.
	sock := filepath.Join(dir, "base.sock")
	srv, _ := startServe(t, nil, "--socket", sock, base)
	if out, err := clientCmd("nbdsh", script(sock)...).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok ok ok" {
		t.Errorf("fast zeros of a dynamic image: %v\n%s", err, out)
	}
	stopServe(t, srv)
	checkClean(t, base)

	// A snapshot over data: the base's block must be hidden by written
	// zeros (ENOTSUP), the empty ones need nothing.
	img, err = engine.Open(base, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte(strings.Repeat("base", 1024)), 0)
	img.Close()
	vhdOK(t, "snapshot", base, top)
	sock = filepath.Join(dir, "top.sock")
	srv, _ = startServe(t, nil, "--socket", sock, top)
	if out, err := clientCmd("nbdsh", script(sock)...).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ENOTSUP ok ok" {
		t.Errorf("fast zeros of a snapshot: %v\n%s", err, out)
	}
	stopServe(t, srv)
	checkClean(t, top)
	checkClean(t, base)
}

// stopServe ends vhd serve with SIGTERM and waits for a clean exit.
func stopServe(t *testing.T, srv *exec.Cmd) {
	t.Helper()
	srv.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("vhd serve after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("vhd serve did not exit after SIGTERM")
	}
}
