package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeSaysWhatItDid: on Ctrl-C vhd serve says what it did (clients
// disconnected, images flushed and closed, FUSE mounts unmounted), and
// what it logs reads as sentences, not time=... level=... lines. Eight
// clients that never read their replies make it cut them off after the
// grace period, which it says too.
func TestServeSaysWhatItDid(t *testing.T) {
	needFUSE(t)
	img := dataImage(t)
	dir := t.TempDir()
	sock, mnt := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	cmd := exec.Command(vhdBin, "serve", "--socket", sock, "--fuse", mnt, "--shutdown-grace", "300ms", img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	r := bufio.NewReader(out)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("vhd serve stopped before it was ready: %v\n%s", err, stderr.String())
		}
		if strings.HasPrefix(line, "control:") {
			break
		}
	}
	stallClients(t, sock)
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("vhd serve after SIGINT: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("vhd serve still runs 30 s after SIGINT\n%s", stderr.String())
	}
	got := stderr.String()
	want := "vhd serve: interrupted: disconnected 8 clients; flushed and closed " + filepath.Base(img) + "; unmounted 1 FUSE mount\n"
	if !strings.Contains(got, want) {
		t.Errorf("vhd serve does not say what it did on Ctrl-C; want %q in:\n%s", want, got)
	}
	if !strings.Contains(got, "vhd serve: warning: nbd: shutdown grace period over") {
		t.Errorf("the cut-off clients are not reported:\n%s", got)
	}
	if strings.Contains(got, "level=") || strings.Contains(got, "time=") {
		t.Errorf("raw log lines on stderr:\n%s", got)
	}
	checkOK(t, img)
}
