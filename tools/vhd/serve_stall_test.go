package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/engine"
)

// stallScript connects 8 libnbd handles; the first writes "flushme" at
// 72 MiB (a block nobody wrote: only a flush or close puts it in the
// image's BAT), then each queues 16 reads of 32 MiB and never reads a
// reply.
const stallScript = `
import nbd, sys, time
buf = nbd.Buffer(32 << 20)
hs = []
for k in range(8):
    h = nbd.NBD()
    h.connect_unix(sys.argv[1])
    if k == 0:
        h.pwrite(b"flushme" * 1000, 72 << 20)
    for i in range(16):
        h.aio_pread(buf, (i % 2) << 25)
    hs.append(h)
print("stalled", flush=True)
time.sleep(3600)
`

// dataImage makes an 80 MiB dynamic image whose first 64 MiB hold random
// data, so reads of it cost the server real memory.
func dataImage(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.vhd")
	img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeDynamic, Size: 80 << 20})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < 64<<20; off += int64(len(buf)) {
		for i := range buf {
			buf[i] = byte(off>>20) + byte(i*7)
		}
		if _, err := img.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// stallClients starts stallScript against sock and waits until its
// reads are queued.
func stallClients(t *testing.T, sock string) {
	t.Helper()
	cl := exec.Command("/usr/bin/python3", "-c", stallScript, sock)
	cl.Stderr = os.Stderr
	out, err := cl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Process.Kill(); cl.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "stalled\n" {
		t.Fatalf("stalled clients: %q %v", line, err)
	}
}

// peakRSS is the most memory the process has had resident (VmHWM).
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// waitExit waits for cmd to exit and returns how long that took from
// since, failing after limit.
func waitExit(t *testing.T, cmd *exec.Cmd, since time.Time, limit time.Duration) (time.Duration, error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return time.Since(since), err
	case <-time.After(limit):
		// SIGQUIT makes the Go runtime print every goroutine to the
		// server's stderr (the test's): where it hangs. Its Wait is
		// collected here, so the cleanup's Wait does not race it.
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		t.Fatalf("vhd serve still running %v after the signal (its goroutines are dumped above)", limit)
		return 0, nil
	}
}

// flushedWrite checks the image is clean and holds the stall script's
// write, which only a flush puts in the BAT.
func flushedWrite(t *testing.T, p string) {
	t.Helper()
	checkClean(t, p)
	img, err := engine.Open(p, engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, 7000)
	if _, err := img.ReadAt(got, 72<<20); err != nil || !bytes.Equal(got, bytes.Repeat([]byte("flushme"), 1000)) {
		t.Errorf("the write before the signal is not in the image (not flushed): %v", err)
	}
}

// TestServeSIGTERMWithStalledClients: 8 clients that queue 32 MiB reads
// and read no reply keep vhd serve within 300 MiB, and SIGTERM still ends
// it within the shutdown grace period (5 s by default) plus a margin,
// with the image flushed and clean. Before, it never exited.
func TestServeSIGTERMWithStalledClients(t *testing.T) {
	img := dataImage(t)
	sock := filepath.Join(t.TempDir(), "s.sock")
	srv, _ := startServe(t, nil, "--socket", sock, img)
	stallClients(t, sock)
	time.Sleep(time.Second)
	rss := peakRSS(t, srv.Process.Pid)
	t.Logf("vhd serve peak RSS with 8 stalled clients: %d MiB", rss>>20)
	if rss > 300<<20 {
		t.Errorf("vhd serve peaked at %d MiB with 8 stalled clients; the limit is 300 MiB", rss>>20)
	}
	start := time.Now()
	srv.Process.Signal(syscall.SIGTERM)
	took, err := waitExit(t, srv, start, 20*time.Second)
	t.Logf("exited %v after SIGTERM", took)
	if err != nil {
		t.Errorf("vhd serve after SIGTERM: %v", err)
	}
	if took > 5*time.Second+3*time.Second {
		t.Errorf("vhd serve took %v to exit after SIGTERM; the grace period is 5s", took)
	}
	flushedWrite(t, img)
}

// TestServeSecondSignal: with clients stalled, a second SIGINT ends vhd
// serve at once (status 1, before the grace period is over), after
// flushing the image, and removes its socket and --pid-file. Before,
// the second signal was swallowed; later the pid file stayed.
func TestServeSecondSignal(t *testing.T) {
	img := dataImage(t)
	sock := filepath.Join(t.TempDir(), "s.sock")
	pidFile := filepath.Join(t.TempDir(), "serve.pid")
	srv, _ := startServe(t, nil, "--socket", sock, "--pid-file", pidFile, img)
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("no pid file once serving: %v", err)
	}
	stallClients(t, sock)
	srv.Process.Signal(syscall.SIGINT)
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	srv.Process.Signal(syscall.SIGINT)
	took, err := waitExit(t, srv, start, 20*time.Second)
	t.Logf("exited %v after the second SIGINT: %v", took, err)
	if exitCode(err) != exitFailed {
		t.Errorf("exit status after a second signal: %v, want %d", err, exitFailed)
	}
	if took > 3*time.Second {
		t.Errorf("vhd serve took %v to exit after a second SIGINT", took)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind: %v", err)
	}
	flushedWrite(t, img)
}
