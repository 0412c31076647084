package service

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Starting in the background. A command that leaves a server running
// (vhd mount) starts this same program again, in its own session, with
// its output going to a log, and waits for it to say, as one JSON line
// on a pipe, that it is ready (with its state) or why it failed. So the
// command returns only once the mount works, and its error is the
// server's own, not a guess; a server that dies before saying anything
// closes the pipe, and the command shows the end of its log.

// ReadyFD is the descriptor on which a server StartBackground started
// finds its end of the readiness pipe.
const ReadyFD = 3

// DefaultReadyTimeout is how long StartBackground waits for readiness.
const DefaultReadyTimeout = 2 * time.Minute

// readyMsg is the line a background server sends once.
type readyMsg struct {
	Error string          `json:"error,omitempty"`
	State json.RawMessage `json:"state,omitempty"`
}

// ReadyPipe is a background server's end of the readiness pipe. A nil
// ReadyPipe (a server in the foreground) does nothing.
type ReadyPipe struct{ f *os.File }

// OpenReadyPipe takes the readiness pipe at fd; a negative fd gives nil.
func OpenReadyPipe(fd int) *ReadyPipe {
	if fd < 0 {
		return nil
	}
	return &ReadyPipe{f: os.NewFile(uintptr(fd), "ready")}
}

// Ready says the server is ready, sending state (JSON) to the starter.
func (p *ReadyPipe) Ready(state any) {
	b, err := json.Marshal(state)
	if err != nil {
		p.Fail(fmt.Errorf("encoding the server's state: %w", err))
		return
	}
	p.send(readyMsg{State: b})
}

// Fail says why the server could not get ready.
func (p *ReadyPipe) Fail(err error) {
	p.send(readyMsg{Error: err.Error()})
}

// FailWith says why, in the words the server would print (its message
// and what to do), which the starter prints as its own error.
func (p *ReadyPipe) FailWith(text string) {
	p.send(readyMsg{Error: text})
}

// send writes the one message and closes the pipe; later calls do
// nothing.
func (p *ReadyPipe) send(m readyMsg) {
	if p == nil || p.f == nil {
		return
	}
	b, _ := json.Marshal(m)
	p.f.Write(append(b, '\n'))
	p.f.Close()
	p.f = nil
}

// Background says how StartBackground starts a server.
type Background struct {
	// What names the server in messages ("the mount server").
	What string
	// Args is the server's command line after the program's name: it
	// must serve in the foreground and report on ReadyFD.
	Args []string
	// Log receives the server's output: a file in a private folder
	// (openPrivateLog refuses a symlink or someone else's file).
	Log string
	// Timeout bounds the wait; DefaultReadyTimeout if zero.
	Timeout time.Duration
}

// StartBackground starts this program again as b says, detached (its
// own session), and waits for its readiness message. On success the
// state it sent is decoded into state. If it fails, or exits without a
// word, the error is its message and the end of its log. ctx ending (or
// the timeout) stops the wait and sends the server SIGTERM.
func StartBackground(ctx context.Context, b Background, state any) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := openPrivateLog(b.Log)
	if err != nil {
		return err
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd := exec.Command(self, b.Args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw} // ReadyFD
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	pw.Close() // the child has its copy; EOF when it exits
	if err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait() // reaps the child if it dies before it is ready
		close(exited)
	}()
	msg, err := awaitReady(ctx, pr, b, cmd.Process)
	if err != nil {
		return err
	}
	if msg.Error == "" && msg.State != nil {
		return json.Unmarshal(msg.State, state)
	}
	<-exited
	why := msg.Error
	if why == "" {
		why = b.What + " exited before it was ready"
	}
	if tail := logTail(b.Log, why); tail != "" {
		why += "\n" + tail
	}
	return errors.New(why)
}

// awaitReady reads the readiness message; a pipe closed without one
// gives an empty message.
func awaitReady(ctx context.Context, pr *os.File, b Background, p *os.Process) (readyMsg, error) {
	ch := make(chan readyMsg, 1)
	go func() {
		var m readyMsg
		line, err := bufio.NewReader(pr).ReadBytes('\n')
		if err == nil && json.Unmarshal(line, &m) != nil {
			m = readyMsg{Error: "the server sent a readiness message that is not JSON: " + strings.TrimSpace(string(line))}
		}
		ch <- m
	}()
	timeout := b.Timeout
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		p.Signal(syscall.SIGTERM)
		return readyMsg{}, ctx.Err()
	case <-time.After(timeout):
		p.Signal(syscall.SIGTERM)
		return readyMsg{}, fmt.Errorf("%s did not become ready in %v; its log: %s", b.What, timeout, b.Log)
	}
}

// repeats reports whether a log line says again what the server's error
// (known, perhaps several lines) already says.
func repeats(line, known string) bool {
	t := strings.TrimSpace(line)
	if known == "" || t == "" {
		return false
	}
	return strings.Contains(line, known) || strings.Contains(known, t) ||
		strings.Contains(t, strings.TrimSpace(strings.SplitN(known, "\n", 2)[0]))
}

// logTail is the end of a log file, for an error message, without the
// lines that repeat known (the error the server already sent).
func logTail(path, known string) string {
	var b []byte
	if f, err := openPrivateFile(path); err == nil {
		if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
			f.Seek(fi.Size()-64<<10, io.SeekStart)
		}
		b, _ = io.ReadAll(io.LimitReader(f, 64<<10))
		f.Close()
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if !repeats(line, known) {
			keep = append(keep, line)
		}
	}
	s := strings.TrimSpace(strings.Join(keep, "\n"))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}
