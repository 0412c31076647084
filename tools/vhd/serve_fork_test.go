package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/service"
)

// TestServeFork: vhd serve --fork returns once the server listens,
// printing what the foreground prints; the pid file names the server
// while it runs; the export carries --description; SIGTERM stops it
// cleanly, removing the pid file and its log. A server that cannot
// start makes --fork fail with its reason, not hang.
func TestServeFork(t *testing.T) {
	need(t, "nbdinfo")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	dir := t.TempDir()
	img, sock, pidFile := filepath.Join(dir, "d.vhd"), filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "serve.pid")
	vhdOK(t, "create", "--size", "8M", img)

	r := vhdOK(t, "serve", "--fork", "--pid-file", pidFile, "--socket", sock, "--description", "the test disk", img)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "nbd+unix://") || !strings.HasPrefix(lines[1], "control:") {
		t.Fatalf("vhd serve --fork printed:\n%s", r)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("no pid file once --fork returned: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !service.ProcessAlive(pid) {
		t.Fatalf("pid file %q names no running server (%v)", b, err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if !strings.Contains(r.stderr, "pid "+strconv.Itoa(pid)) {
		t.Errorf("--fork does not say the server's pid:\n%s", r.stderr)
	}
	out, err := exec.Command("nbdinfo", lines[0]).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the test disk") {
		t.Fatalf("nbdinfo of the forked server (%v):\n%s", err, out)
	}
	logs, _ := filepath.Glob(filepath.Join(service.RuntimeDir(), "logs", "serve-*.log"))
	if len(logs) != 1 {
		t.Fatalf("want the running server's log, found %v", logs)
	}

	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(20 * time.Second)
	for service.ProcessAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatal("the forked server is still running 20 s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("the pid file outlived the server: %v", err)
	}
	if _, err := os.Stat(logs[0]); !os.IsNotExist(err) {
		t.Errorf("a cleanly stopped server left its log: %v", err)
	}
	checkOK(t, img)

	// A server that cannot start: --fork says why, exit 1, nothing left.
	r = vhdCode(t, exitFailed, "serve", "--fork", "--pid-file", pidFile, "--socket", sock, filepath.Join(dir, "missing.vhd"))
	if !strings.Contains(r.stderr, "missing.vhd") {
		t.Errorf("--fork of a missing image does not say why:\n%s", r)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("a server that never listened wrote the pid file: %v", err)
	}
}
