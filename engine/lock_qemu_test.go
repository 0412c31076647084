package engine

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQEMUSeesVHDLocks: while vhd has an image open for writing, qemu-io
// cannot open it to write nor qemu-img to read it (without -U), as with a
// QEMU writer; while vhd reads it, qemu-io cannot write it but qemu-img
// reads it; once a writer is frozen into a read-only parent, qemu-img
// reads it. Before, vhd took only flock, which QEMU does not see: qemu-io
// wrote into an image vhd was serving.
func TestQEMUSeesVHDLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	qemuWriteRefused(t, path, "vhd writes it")
	qemuReadRefused(t, path, true, "vhd writes it")
	if err := img.Freeze(); err != nil {
		t.Fatal(err)
	}
	qemuWriteRefused(t, path, "vhd froze it as a parent")
	qemuReadRefused(t, path, false, "vhd froze it as a parent")
	img.Close()

	img, err = Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	qemuWriteRefused(t, path, "vhd reads it")
	qemuReadRefused(t, path, false, "vhd reads it")
	img.Close()
	if out, err := exec.Command("qemu-io", "-f", "vpc", "-c", "write -P 0xab 0 64k", path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io once vhd closed it: %v\n%s", err, out)
	}
	checkClean(t, path)
}

func qemuWriteRefused(t *testing.T, path, while string) {
	t.Helper()
	out, err := exec.Command("qemu-io", "-f", "vpc", "-c", "write -P 0xab 0 64k", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `"write" lock`) {
		t.Errorf("qemu-io write while %s: %v\n%s; want refused for the write lock", while, err, out)
	}
}

// qemuReadRefused checks that qemu-img info is refused (refused) or
// allowed, and that -U always reads.
func qemuReadRefused(t *testing.T, path string, refused bool, while string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-f", "vpc", path).CombinedOutput()
	if refused != (err != nil) {
		t.Errorf("qemu-img info while %s: %v\n%s; want refused %v", while, err, out, refused)
	}
	if out, err := exec.Command("qemu-img", "info", "-U", "-f", "vpc", path).CombinedOutput(); err != nil {
		t.Errorf("qemu-img info -U while %s: %v\n%s", while, err, out)
	}
}

// TestVHDSeesQEMULocks: while qemu-nbd serves an image read-write, vhd
// refuses to open it for writing or reading, naming qemu-nbd and its pid,
// and LockHolders lists it as a writer; while qemu-nbd serves it
// read-only, vhd may read it but not write it. Before, vhd opened it for
// writing beside qemu-nbd, and 'vhd info' said it was not in use.
func TestVHDSeesQEMULocks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "q.vhd")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vpc", path, "4M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	nbd := startQEMUNBD(t, dir, path)
	for _, ro := range []bool{false, true} {
		img, err := Open(path, Options{ReadOnly: ro})
		if err == nil {
			img.Close()
		}
		var le *LockedError
		if !errors.As(err, &le) || le.PID != nbd.Process.Pid || le.Command != "qemu-nbd" {
			t.Errorf("open (read-only %v) while qemu-nbd writes: %v; want a LockedError naming qemu-nbd, pid %d", ro, err, nbd.Process.Pid)
		}
	}
	if h := LockHolders(path); len(h) != 1 || h[0].PID != nbd.Process.Pid || !h[0].Write {
		t.Errorf("holders %+v, want qemu-nbd (pid %d) writing", h, nbd.Process.Pid)
	}
	stopQEMUNBD(nbd)

	nbd = startQEMUNBD(t, dir, path, "--read-only")
	if img, err := Open(path, Options{}); !errors.Is(err, ErrLocked) {
		t.Errorf("open for writing while qemu-nbd reads: %v, want ErrLocked", err)
		if err == nil {
			img.Close()
		}
	}
	img, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open read-only while qemu-nbd reads: %v", err)
	}
	img.Close()
	if h := LockHolders(path); len(h) != 1 || h[0].Write {
		t.Errorf("holders %+v, want qemu-nbd reading", h)
	}
	stopQEMUNBD(nbd)
	checkClean(t, path)
}

// startQEMUNBD serves path with qemu-nbd (in the foreground, its own
// process group) and waits until its locks are taken: its socket exists.
func startQEMUNBD(t *testing.T, dir, path string, args ...string) *exec.Cmd {
	t.Helper()
	sock := filepath.Join(dir, "q.sock")
	os.Remove(sock)
	cmd := exec.Command("qemu-nbd", append(append([]string{"-k", sock, "-f", "vpc", "-t"}, args...), path)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopQEMUNBD(cmd) })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-nbd did not make its socket in 20 s")
		}
	}
}

func stopQEMUNBD(cmd *exec.Cmd) {
	if cmd.ProcessState == nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
}
