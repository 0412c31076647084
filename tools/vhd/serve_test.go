package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/engine"
	"vhdkit/internal/testpki"
	"vhdkit/service"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/setup.sh", tool)
		}
	}
}

// clientCmd runs an NBD client; nbdsh needs the system python3.
func clientCmd(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin:"+os.Getenv("PATH"))
	return cmd
}

func newImage(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.vhd")
	img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func checkClean(t *testing.T, path string) {
	t.Helper()
	rep, err := engine.CheckPath(path, engine.CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	for _, p := range rep.Problems {
		t.Errorf("check %s: %s", path, p)
	}
}

// startServe starts vhd serve and returns it with the first URI it
// printed.
func startServe(t *testing.T, env []string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(vhdBin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("vhd serve printed no URI: %v", err)
	}
	go io.Copy(io.Discard, out)
	return cmd, strings.TrimSpace(line)
}

// TestServeKilledMidWrite kills vhd serve with SIGKILL while a client
// writes and flushes, then checks the image is consistent (after repair
// at most) and holds every write acknowledged before the last flush that
// completed.
func TestServeKilledMidWrite(t *testing.T) {
	need(t, "nbdsh")
	const size = 64 << 20
	img := newImage(t, size)
	sock := filepath.Join(t.TempDir(), "s.sock")
	srv, uri := startServe(t, nil, "--socket", sock, img)

	// Each write i fills 64 KiB at slot i with i; the 1000 writes go to
	// distinct slots, 8 in flight at a time, on a second connection w.
	// Once a batch is acknowledged, a flush on the first connection h
	// covers it (that is what CAN_MULTI_CONN promises); "F n" is printed
	// once writes 0..n-1 are covered by a completed flush.
	script := `
import struct, sys
assert h.can_multi_conn()
w = nbd.NBD()
w.connect_uri(h.get_uri())
blk = 64 * 1024
i = 0
while i < 1000:
    cookies = []
    for j in range(8):
        buf = struct.pack(">I", i + j) * (blk // 4)
        cookies.append(w.aio_pwrite(buf, (i + j) * blk))
    for c in cookies:
        while not w.aio_command_completed(c):
            w.poll(-1)
    i += 8
    h.flush()
    print("F", i, flush=True)
`
	cl := clientCmd("nbdsh", "-u", uri, "-c", script)
	stdout, err := cl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	flushed := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "F "); ok {
			flushed, _ = strconv.Atoi(n)
		}
		if flushed == 200 {
			srv.Process.Signal(syscall.SIGKILL)
		}
	}
	cl.Wait() // fails: the server died under it
	srv.Wait()
	if flushed < 200 || flushed >= 1000 {
		t.Fatalf("%d writes flushed when the client ended: the kill did not land mid-workload", flushed)
	}
	t.Logf("killed after %d writes were flushed", flushed)
	if did, err := engine.Repair(img, engine.RepairOptions{Bitmaps: true}); err != nil {
		t.Fatalf("repair: %v", err)
	} else if len(did) > 0 {
		t.Logf("repair: %v", did)
	}
	checkClean(t, img)
	d, err := engine.Open(img, engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	buf := make([]byte, 64<<10)
	for i := 0; i < flushed; i++ {
		if _, err := d.ReadAt(buf, int64(i)*int64(len(buf))); err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat(binary.BigEndian.AppendUint32(nil, uint32(i)), len(buf)/4)
		if !bytes.Equal(buf, want) {
			t.Fatalf("write %d (flushed before the kill) is missing", i)
		}
	}
}

// TestServeSIGTERM: the default socket is in $XDG_RUNTIME_DIR, its URI
// is printed, and SIGTERM ends the server cleanly with the data flushed.
func TestServeSIGTERM(t *testing.T) {
	need(t, "nbdsh")
	img := newImage(t, 16<<20)
	run := t.TempDir()
	srv, uri := startServe(t, []string{"XDG_RUNTIME_DIR=" + run}, img)
	sock := filepath.Join(run, fmt.Sprintf("vhd-serve-%d.sock", srv.Process.Pid))
	if want := "nbd+unix:///disk?socket=" + sock; uri != want {
		t.Fatalf("URI %q, want %q", uri, want)
	}
	// The single image is also the default export.
	out, err := clientCmd("nbdsh", "-u", "nbd+unix:///?socket="+sock, "-c", `
h.pwrite(b"persist" * 100, 4 << 20)
h.trim(2 << 20, 10 << 20)
print(h.get_size())
`).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "16777216" {
		t.Fatalf("nbdsh: %v\n%s", err, out)
	}
	srv.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("vhd serve after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("vhd serve did not exit after SIGTERM")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	checkClean(t, img)
}

func TestServeTCPAndReadOnly(t *testing.T) {
	need(t, "nbdinfo", "nbdsh")
	img := newImage(t, 8<<20)
	_, uri := startServe(t, nil, "--listen", ":0", "--read-only", img+"=boot")
	if !strings.HasPrefix(uri, "nbd://127.0.0.1:") || !strings.HasSuffix(uri, "/boot") {
		t.Fatalf("TCP URI %q", uri)
	}
	if err := clientCmd("nbdinfo", "--is", "read-only", uri).Run(); err != nil {
		t.Errorf("nbdinfo --is read-only %s: %v", uri, err)
	}
	// Read-only opens share the image's lock, so a writer is refused.
	cmd := exec.Command(vhdBin, "serve", "--socket", filepath.Join(t.TempDir(), "s"), img)
	if out, err := cmd.CombinedOutput(); exitCode(err) != 1 || !strings.Contains(string(out), "in use") {
		t.Errorf("second (writable) serve of an image served read-only: %v\n%s", err, out)
	}
}

func TestServeUsage(t *testing.T) {
	img := newImage(t, 1<<20)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"--bogus", img}, 2},
		{[]string{"--tls-cert", "c.pem", img}, 2},
		{[]string{"--tls-ca", "ca.pem", img}, 2},
		{[]string{img, img}, 2}, // same export name twice
		{[]string{"--socket", filepath.Join(t.TempDir(), "s"), "/nonexistent.vhd"}, 1},
		{[]string{"--help"}, 0},
	} {
		err := exec.Command(vhdBin, append([]string{"serve"}, tc.args...)...).Run()
		if got := exitCode(err); got != tc.code {
			t.Errorf("vhd serve %v: exit %d, want %d", tc.args, got, tc.code)
		}
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// TestServeTLS: with --tls-cert/--tls-key a libnbd client must start TLS;
// with --tls-ca it must also present a certificate from that CA.
func TestServeTLS(t *testing.T) {
	need(t, "nbdsh", "nbdinfo")
	dir := t.TempDir()
	writeTestPKI(t, dir)
	img := newImage(t, 8<<20)
	sock := filepath.Join(t.TempDir(), "tls.sock")
	srv, uri := startServe(t, nil, "--socket", sock, "--tls-cert", filepath.Join(dir, "server-cert.pem"),
		"--tls-key", filepath.Join(dir, "server-key.pem"), "--tls-ca", filepath.Join(dir, "ca-cert.pem"), img)
	if !strings.HasPrefix(uri, "nbds+unix:///disk?socket=") {
		t.Fatalf("TLS URI %q", uri)
	}
	if err := clientCmd("nbdinfo", "nbd+unix:///disk?socket="+sock).Run(); err == nil {
		t.Error("a client without TLS was let in")
	}
	connect := func(certs string) string {
		return fmt.Sprintf(`
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_verify_peer(False)
%s
h.set_export_name("disk")
h.connect_unix(%q)
`, certs, sock)
	}
	out, err := clientCmd("nbdsh", "-c", connect("")).CombinedOutput()
	if err == nil {
		t.Errorf("a TLS client without a certificate was let in:\n%s", out)
	}
	out, err = clientCmd("nbdsh", "-c", connect(fmt.Sprintf("h.set_tls_certificates(%q)", dir))+`
h.pwrite(b"secret", 1024, nbd.CMD_FLAG_FUA)
assert h.pread(6, 1024) == b"secret"
print(h.get_tls_negotiated())
`).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "True" {
		t.Fatalf("TLS client with a certificate: %v\n%s", err, out)
	}
	srv.Process.Signal(syscall.SIGTERM)
	if err := srv.Wait(); err != nil {
		t.Fatalf("vhd serve: %v", err)
	}
	checkClean(t, img)
}

// writeTestPKI writes a CA, a server certificate and a client certificate
// in the file names libnbd's set_tls_certificates looks for.
func writeTestPKI(t *testing.T, dir string) { testpki.Write(t, dir) }

// TestServeChainOverNBDAndFUSE serves a differencing chain over NBD and
// FUSE from one process: the parent's data shows through both, and a
// write through either is read back through the other at once.
func TestServeChainOverNBDAndFUSE(t *testing.T) {
	need(t, "qemu-io", "qemu-img")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine: cannot mount FUSE")
	}
	dir := t.TempDir()
	base, top, mnt := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "top.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	raw := filepath.Join(dir, "base.raw")
	data := bytes.Repeat([]byte("parent! "), 1<<17) // 1 MiB
	if err := os.WriteFile(raw, append(data, make([]byte, 15<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	vhdOK(t, "convert", "--to", "dynamic", raw, base)
	vhdOK(t, "snapshot", base, top)
	sock := filepath.Join(dir, "s.sock")
	cmd, uri := startServe(t, nil, "--socket", sock, "--fuse", mnt, top)
	for i := 0; i < 100; i++ { // the fuse line follows the URI
		if _, err := os.Stat(filepath.Join(mnt, "disk")); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	disk, err := os.OpenFile(filepath.Join(mnt, "disk"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := disk.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the parent's data through FUSE: %v", err)
	}
	// NBD writes, FUSE reads.
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 2M 64k", uri).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io write: %v\n%s", err, out)
	}
	got = make([]byte, 64<<10)
	disk.ReadAt(got, 2<<20)
	if !bytes.Equal(got, bytes.Repeat([]byte{0x5a}, 64<<10)) {
		t.Error("a write over NBD is not read back through FUSE")
	}
	// FUSE writes, NBD reads.
	if _, err := disk.WriteAt(bytes.Repeat([]byte{0xa5}, 64<<10), 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := disk.Sync(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "read -P 0xa5 4M 64k", "-c", "read -P 0x5a 2M 64k", uri).CombinedOutput(); err != nil || strings.Contains(string(out), "Pattern verification failed") {
		t.Errorf("a write through FUSE is not read back over NBD: %v\n%s", err, out)
	}
	disk.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("vhd serve after SIGTERM: %v", err)
	}
	if service.IsMounted(absPath(t, mnt)) {
		t.Error("the FUSE mount is still there after vhd serve stopped")
	}
	checkClean(t, top)
	vhdOK(t, "merge", top)
	b := rawOf(t, base, filepath.Join(dir, "out.raw"))
	if !bytes.Equal(b[:len(data)], data) || !bytes.Equal(b[2<<20:2<<20+64<<10], bytes.Repeat([]byte{0x5a}, 64<<10)) || !bytes.Equal(b[4<<20:4<<20+64<<10], bytes.Repeat([]byte{0xa5}, 64<<10)) {
		t.Error("the merged image lacks what was written over NBD and FUSE")
	}
}
