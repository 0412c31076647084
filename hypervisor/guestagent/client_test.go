package guestagent

import (
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
)

// These tests talk to Debian's qemu-guest-agent, run on the host over a
// unix socket (-m unix-listen) instead of a virtio-serial port: the same
// program and protocol the guests run. Every command that could change
// the host (freezing its filesystems, shutting down, running programs,
// files, time, users) is disabled with -b, so the agent refuses the
// freeze as it refuses a command it does not allow: that is the error
// path. The freeze itself is tested in a guest (hypervisor's tests).

// allowedOnHost are the commands the host's agent may run.
var allowedOnHost = map[string]bool{"guest-sync-delimited": true, "guest-sync": true, "guest-ping": true, "guest-info": true, "guest-fsfreeze-status": true}

// hostAgent is qemu-ga running on the host.
type hostAgent struct {
	cmd  *exec.Cmd
	sock string
}

func startHostAgent(t *testing.T) *hostAgent {
	t.Helper()
	prog, err := exec.LookPath("qemu-ga")
	if err != nil {
		t.Fatalf("qemu-ga is not installed (scripts/setup.sh installs qemu-guest-agent): %v", err)
	}
	out, err := exec.Command(prog, "-b", "help").CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-ga -b help: %v: %s", err, out)
	}
	var blocked []string
	for _, rpc := range strings.Fields(string(out)) {
		if !allowedOnHost[rpc] {
			blocked = append(blocked, rpc)
		}
	}
	if len(blocked) == 0 || !strings.Contains(string(out), "guest-fsfreeze-freeze") {
		t.Fatalf("qemu-ga -b help did not list the commands to disable: %s", out)
	}
	dir := t.TempDir()
	a := &hostAgent{sock: filepath.Join(dir, "qga.sock")}
	a.cmd = exec.Command(prog, "-m", "unix-listen", "-p", a.sock, "-t", dir, "-f", filepath.Join(dir, "qga.pid"),
		"-b", strings.Join(blocked, ","))
	a.cmd.Stderr = os.Stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.cmd.Process.Signal(syscall.SIGCONT)
		a.cmd.Process.Kill()
		a.cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(a.sock); err == nil {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-ga did not make its socket within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *hostAgent) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", a.sock)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestAgentCommands: ping, the freeze status, and a refused freeze
// (an *Error that leaves the stream usable) against the real agent.
func TestAgentCommands(t *testing.T) {
	a := startHostAgent(t)
	c := New(a.dial(t), nil)
	defer c.Close()
	ctx := timeout(t, 10*time.Second)
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := c.FreezeStatus(ctx); err != nil || s != "thawed" {
		t.Fatalf("freeze status %q, %v", s, err)
	}
	_, err := c.FreezeFS(ctx)
	var ae *Error
	if !errors.As(err, &ae) || ae.Class != "CommandNotFound" || !strings.Contains(err.Error(), "guest-fsfreeze-freeze") {
		t.Fatalf("a disabled freeze: %v", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("a ping after a refused command: %v", err)
	}
}

// TestAgentResync: what an earlier client left in the stream (commands
// whose replies nobody read, one long reply, a command cut in half) is
// skipped by the resynchronisation, and the replies match the calls.
func TestAgentResync(t *testing.T) {
	a := startHostAgent(t)
	conn := a.dial(t)
	stale := `{"execute": "guest-info", "id": 1}` + "\n" + `{"execute": "guest-ping", "id": 2}` + "\n" +
		`{"execute": "guest-fsfreeze-status"}` + "\n" + `{"execute": "guest-pi`
	if _, err := conn.Write([]byte(stale)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the agent answers them
	c := New(conn, nil)
	defer c.Close()
	ctx := timeout(t, 10*time.Second)
	if s, err := c.FreezeStatus(ctx); err != nil || s != "thawed" {
		t.Fatalf("freeze status after stale replies: %q, %v", s, err)
	}
}

// TestAgentTimeoutThenResync: an agent that stops answering (SIGSTOP)
// makes a call fail at its deadline, not hang; once it runs again, its
// late reply to that call is skipped and the next call gets its own.
func TestAgentTimeoutThenResync(t *testing.T) {
	a := startHostAgent(t)
	c := New(a.dial(t), nil)
	defer c.Close()
	if err := c.Ping(timeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	a.cmd.Process.Signal(syscall.SIGSTOP)
	start := time.Now()
	_, err := c.FreezeStatus(timeout(t, 300*time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("a call to a stopped agent: %v after %v", err, time.Since(start))
	}
	a.cmd.Process.Signal(syscall.SIGCONT)
	if s, err := c.FreezeStatus(timeout(t, 10*time.Second)); err != nil || s != "thawed" {
		t.Fatalf("after the agent came back: %q, %v", s, err)
	}
	// The stale ping reply came first; the status call skipped it.
	if err := c.Ping(timeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestNoAgent: a channel nobody answers on (a guest without an agent:
// QEMU holds the bytes) fails each call at its deadline, and a
// cancelled context ends a call at once.
func TestNoAgent(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	silent := os.NewFile(uintptr(fds[1]), "silent")
	defer silent.Close()
	f := os.NewFile(uintptr(fds[0]), "host")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := New(conn, nil)
	defer c.Close()
	start := time.Now()
	if err := c.Ping(timeout(t, 200*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "guest-sync-delimited") {
		t.Fatalf("ping with no agent: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("ping with no agent took %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	if err := c.Ping(ctx); !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Fatalf("a cancelled ping: %v after %v", err, time.Since(start))
	}
	c.Close()
	if err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("a ping after Close: %v", err)
	}
}
