package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startQEMU starts a QEMU with no machine (no guest: it starts in a
// moment) whose monitor connects to a socket the test listens on, and
// returns the client.
func startQEMU(t *testing.T, extra ...string) *Client {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 is not installed (scripts/setup.sh installs qemu-system-x86): %v", err)
	}
	dir, err := os.MkdirTemp("", "qmp-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	args := append([]string{"-machine", "none", "-nodefaults", "-no-user-config", "-display", "none",
		"-chardev", "socket,id=qmp,path=" + sock, "-mon", "chardev=qmp,mode=control"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	l.(*net.UnixListener).SetDeadline(time.Now().Add(30 * time.Second))
	conn, err := l.Accept()
	if err != nil {
		t.Fatalf("QEMU did not connect its monitor: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRealQEMU runs the client against QEMU itself: the greeting, a
// reply that is one ~200 KB line (a 64 KiB line reader fails here), the
// RESUME event that QEMU sends before cont's reply, errors, and the end
// of the connection when QEMU quits.
func TestRealQEMU(t *testing.T) {
	c := startQEMU(t, "-S")
	if v := c.Greeting().Version.QEMU; v.Major < 7 {
		t.Fatalf("greeting version %+v", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	schema, err := c.Raw(ctx, "query-qmp-schema", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(schema) < 64<<10 {
		t.Fatalf("query-qmp-schema is %d bytes: the test wants one past 64 KiB", len(schema))
	}
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil || st.Status != "prelaunch" {
		t.Fatalf("query-status: %+v %v", st, err)
	}
	if err := c.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, c, "RESUME")
	var qe *Error
	if err := c.Execute(ctx, "no-such-command", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("unknown command: %v", err)
	}
	if err := c.Execute(ctx, "human-monitor-command", map[string]any{"command-line": "info version"}, nil); err != nil {
		t.Fatal(err)
	}
	// Many commands at once from many goroutines: each gets its reply.
	errs := make(chan error, 16)
	for i := range 16 {
		go func() {
			var out string
			err := c.Execute(ctx, "human-monitor-command", map[string]any{"command-line": fmt.Sprintf("print %d", i)}, &out)
			if err == nil && strings.TrimSpace(out) != fmt.Sprintf("%#x", i) && strings.TrimSpace(out) != fmt.Sprint(i) {
				err = fmt.Errorf("print %d came back as %q", i, out)
			}
			errs <- err
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	c.Execute(ctx, "quit", nil, nil) // its reply may be lost as QEMU exits
	waitEvent(t, c, "SHUTDOWN")
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the connection did not end when QEMU quit")
	}
	if err := c.Execute(ctx, "query-status", nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("a command after the end: %v, want ErrClosed", err)
	}
}

func waitEvent(t *testing.T, c *Client, name string) Event {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e, ok := <-c.Events():
			if !ok {
				t.Fatalf("the connection ended before %s", name)
			}
			if e.Name == name {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event", name)
		}
	}
}

// scripted is the QEMU side of a pipe that greets, accepts
// qmp_capabilities, and then answers each command with what reply says
// (raw lines, the command's id substituted for ID).
func scripted(t *testing.T, reply func(cmd string) []string) net.Conn {
	client, server := net.Pipe()
	go func() {
		defer server.Close()
		fmt.Fprintln(server, `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}`)
		sc := bufio.NewScanner(server)
		for sc.Scan() {
			var cmd struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if json.Unmarshal(sc.Bytes(), &cmd) != nil {
				return
			}
			lines := []string{`{"return": {}, "id": ID}`}
			if cmd.Execute != "qmp_capabilities" {
				lines = reply(cmd.Execute)
			}
			for _, l := range lines {
				if _, err := fmt.Fprintln(server, strings.ReplaceAll(l, "ID", string(cmd.ID))); err != nil {
					return
				}
			}
		}
	}()
	return client
}

// TestEventsBeforeReply: events sent between a command and its reply go
// to the event stream, and a reply with another id (or none) does not
// answer the command.
func TestEventsBeforeReply(t *testing.T) {
	conn := scripted(t, func(cmd string) []string {
		return []string{
			`{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 0}}`,
			`{"return": {"wrong": true}, "id": "someone-else"}`,
			`{"error": {"class": "GenericError", "desc": "unparsable"}}`,
			`{"event": "STOP", "timestamp": {"seconds": 2, "microseconds": 0}}`,
			`{"return": {"right": true}, "id": ID}`,
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out map[string]bool
	if err := c.Execute(ctx, "cont", nil, &out); err != nil || !out["right"] {
		t.Fatalf("reply %v, %v", out, err)
	}
	for _, want := range []string{"RESUME", "STOP"} {
		if e := <-c.Events(); e.Name != want {
			t.Fatalf("event %s, want %s", e.Name, want)
		}
	}
}

// TestNotQMP: a peer that is not QEMU's monitor is refused at the
// greeting, and one that stops talking makes the handshake time out.
func TestNotQMP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, server := net.Pipe()
	go func() { fmt.Fprintln(server, `{"return": {}}`); server.Close() }()
	if _, err := New(ctx, client, nil); !errors.Is(err, ErrProtocol) {
		t.Fatalf("a reply for a greeting: %v", err)
	}
	silent, peer := net.Pipe()
	defer peer.Close()
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := New(short, silent, nil); err == nil {
		t.Fatal("a silent peer was accepted")
	}
}

// TestMessageTooLong: a message past MaxMessageBytes ends the connection
// with ErrTooLong instead of growing a buffer without bound.
func TestMessageTooLong(t *testing.T) {
	conn := scripted(t, func(string) []string {
		return []string{`{"return": "` + strings.Repeat("x", MaxMessageBytes+10) + `", "id": ID}`}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Execute(ctx, "big", nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
	if !errors.Is(c.Err(), ErrTooLong) {
		t.Fatalf("ended with %v, want ErrTooLong", c.Err())
	}
}

// failingWrites is a connection whose writes fail with err once it is
// set: a QEMU that went away while the reader has not seen the end yet.
type failingWrites struct {
	net.Conn
	mu  sync.Mutex
	err error
}

func (f *failingWrites) Write(p []byte) (int, error) {
	f.mu.Lock()
	err := f.err
	f.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return f.Conn.Write(p)
}

// TestWriteToEndedConnection: a command whose write finds the
// connection ended (our end closed by the reader a moment before, or
// QEMU's end gone) fails with ErrClosed, as one whose reply is lost
// does, so callers know QEMU is gone; other write failures stay as
// they are.
func TestWriteToEndedConnection(t *testing.T) {
	for _, c := range []struct {
		err    error
		closed bool
	}{
		{&net.OpError{Op: "write", Net: "unix", Err: net.ErrClosed}, true},
		{&net.OpError{Op: "write", Net: "unix", Err: os.NewSyscallError("write", syscall.EPIPE)}, true},
		{io.ErrClosedPipe, true},
		{os.ErrDeadlineExceeded, false},
	} {
		conn := &failingWrites{Conn: scripted(t, func(string) []string { return []string{`{"return": {}, "id": ID}`} })}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cl, err := New(ctx, conn, nil)
		if err != nil {
			t.Fatal(err)
		}
		conn.mu.Lock()
		conn.err = c.err
		conn.mu.Unlock()
		err = cl.Execute(ctx, "query-status", nil, nil)
		if errors.Is(err, ErrClosed) != c.closed || !errors.Is(err, c.err) {
			t.Errorf("a write failing with %v: %v (want ErrClosed: %v)", c.err, err, c.closed)
		}
		cl.Close()
		cancel()
	}
}
