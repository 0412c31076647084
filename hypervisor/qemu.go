package hypervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"vhdkit/hypervisor/guestagent"
	"vhdkit/hypervisor/qmp"
)

// instance is one running QEMU: its process, its monitor (QMP) and its
// console.
type instance struct {
	cmd     *exec.Cmd
	qmp     *qmp.Client
	agent   *guestagent.Client // nil for a machine without the agent's port
	console *console
	stderr  *tailWriter
	log     *slog.Logger

	exited     chan struct{} // closed when the process has been waited for
	eventsDone chan struct{} // closed when the event stream has ended
	waitErr    error         // set before exited closes

	mu sync.Mutex
	// shutdown is the reason of QEMU's SHUTDOWN event ("guest-shutdown"
	// for a guest that powered off). Guarded by mu.
	shutdown string
}

// startTimeout bounds QEMU's start: connecting its console and monitor.
const startTimeout = 30 * time.Second

// start runs QEMU with args and waits for it to connect its console and
// monitor to the sockets l names (the caller listens on nothing: start
// does). QEMU runs in its own process group, so a terminal's Ctrl-C
// reaches the runner (which powers the guest down) and not QEMU, and it
// is killed if the runner dies.
func start(ctx context.Context, prog string, args []string, l launch, con *console, log *slog.Logger) (*instance, error) {
	conL, err := net.Listen("unix", l.consoleSocket())
	if err != nil {
		return nil, err
	}
	defer closeListener(conL)
	qmpL, err := net.Listen("unix", l.qmpSocket())
	if err != nil {
		return nil, err
	}
	defer closeListener(qmpL)
	var agentL net.Listener
	if l.agent {
		if agentL, err = net.Listen("unix", l.agentSocket()); err != nil {
			return nil, err
		}
		defer closeListener(agentL)
	}

	inst := &instance{console: con, stderr: &tailWriter{log: log}, log: log, exited: make(chan struct{}), eventsDone: make(chan struct{})}
	inst.cmd = exec.Command(prog, args...)
	inst.cmd.Stdout, inst.cmd.Stderr = inst.stderr, inst.stderr
	inst.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := inst.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w (scripts/setup.sh installs qemu-system-x86)", prog, err)
	}
	go func() {
		inst.waitErr = inst.cmd.Wait()
		close(inst.exited)
	}()
	if err := inst.connect(ctx, conL, qmpL, agentL); err != nil {
		inst.kill()
		return nil, err
	}
	return inst, nil
}

func closeListener(l net.Listener) {
	l.Close() // a unix listener removes its socket file
}

// connect accepts QEMU's console, monitor and (if agentL) guest agent
// connections, in the order QEMU makes them, and does the QMP handshake.
// The agent's connection is held for the whole run: what is written to
// it waits in QEMU until an agent in the guest opens the port.
func (inst *instance) connect(ctx context.Context, conL, qmpL, agentL net.Listener) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	conC, err := inst.accept(ctx, conL, "console")
	if err != nil {
		return err
	}
	go inst.console.serve(conC)
	qmpC, err := inst.accept(ctx, qmpL, "monitor")
	if err != nil {
		return err
	}
	if agentL != nil {
		agentC, err := inst.accept(ctx, agentL, "guest agent channel")
		if err != nil {
			qmpC.Close()
			return err
		}
		inst.agent = guestagent.New(agentC, inst.log)
	}
	if inst.qmp, err = qmp.New(ctx, qmpC, inst.log); err != nil {
		return err
	}
	go inst.watchEvents()
	return nil
}

// accept waits for QEMU to connect to l, or to exit, or ctx to end.
func (inst *instance) accept(ctx context.Context, l net.Listener, what string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-inst.exited:
		l.Close()
		return nil, inst.exitError()
	case <-ctx.Done():
		l.Close()
		return nil, fmt.Errorf("QEMU did not connect its %s within %v: %w", what, startTimeout, ctx.Err())
	}
}

// watchEvents follows QEMU's events for the reason it shuts down (the
// run state is asked for when needed: query-status).
func (inst *instance) watchEvents() {
	defer close(inst.eventsDone)
	for e := range inst.qmp.Events() {
		inst.log.Debug("qemu: event", "event", e.Name, "data", string(e.Data))
		if e.Name != "SHUTDOWN" {
			continue
		}
		var d struct {
			Reason string `json:"reason"`
		}
		json.Unmarshal(e.Data, &d)
		inst.mu.Lock()
		inst.shutdown = d.Reason
		inst.mu.Unlock()
	}
}

// shutdownReason is the reason QEMU gave for shutting down, if it did.
func (inst *instance) shutdownReason() string {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.shutdown
}

// wait waits for QEMU to exit, then for its monitor to deliver what it
// sent before exiting (the SHUTDOWN event), and says how the run ended:
// nil for a guest that powered off and a QEMU that exited cleanly.
func (inst *instance) wait() error {
	<-inst.exited
	inst.closeAgent()
	inst.drain()
	reason := inst.shutdownReason()
	if inst.waitErr == nil && reason == "guest-shutdown" {
		return nil
	}
	return inst.exitError()
}

// drain waits (a little, at most) for what QEMU sent before it exited:
// its last events and the guest's last console output, which the user
// should see before the run returns.
func (inst *instance) drain() {
	timeout := time.After(5 * time.Second)
	for _, ch := range []<-chan struct{}{inst.eventsDone, inst.console.done} {
		select {
		case <-ch:
		case <-timeout:
			return
		}
	}
}

// exitError describes how QEMU ended, with what it printed last.
func (inst *instance) exitError() error {
	how := "exited"
	if inst.waitErr != nil {
		how = inst.waitErr.Error()
	}
	if r := inst.shutdownReason(); r != "" {
		how += fmt.Sprintf(" (shutdown: %s)", r)
	}
	msg := fmt.Sprintf("QEMU %s", how)
	if t := inst.stderr.last(); t != "" {
		msg += ": " + t
	}
	return fmt.Errorf("%w: %s", ErrQEMUExited, msg)
}

// stop ends QEMU: quit over QMP, then SIGKILL if it has not exited
// within grace.
func (inst *instance) stop(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	inst.qmp.Execute(ctx, "quit", nil, nil) // the reply may be lost as it exits
	select {
	case <-inst.exited:
		inst.closeAgent()
	case <-ctx.Done():
		inst.kill()
	}
}

// kill ends QEMU at once and waits for it.
func (inst *instance) kill() {
	inst.cmd.Process.Kill()
	<-inst.exited
	if inst.qmp != nil {
		inst.qmp.Close()
	}
	inst.closeAgent()
}

// closeAgent closes the agent's connection once QEMU is gone.
func (inst *instance) closeAgent() {
	if inst.agent != nil {
		inst.agent.Close()
	}
}

// tailWriter keeps the last lines QEMU printed (for error messages) and
// logs each.
type tailWriter struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailBytes {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailBytes:]...)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		if line != "" {
			t.log.Info("qemu: " + line)
		}
	}
	return len(p), nil
}

// last is QEMU's last output on one line.
func (t *tailWriter) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(t.buf)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return strings.Join(lines, "; ")
}

// errorsIsExit reports whether err says QEMU is gone.
func errorsIsExit(err error) bool {
	return errors.Is(err, ErrQEMUExited) || errors.Is(err, qmp.ErrClosed) || errors.Is(err, os.ErrProcessDone)
}

// The prober's view of an instance (accel.go).
func (inst *instance) life() <-chan struct{} { return inst.console.life }
func (inst *instance) gone() <-chan struct{} { return inst.exited }
func (inst *instance) failure() error        { return inst.exitError() }
func (inst *instance) abandon()              { inst.stop(5 * time.Second) }
