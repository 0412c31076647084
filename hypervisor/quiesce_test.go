package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"vhdkit/hypervisor/guestagent"
)

// The Quiescer's failure paths, against Debian's qemu-guest-agent run on
// the host over a unix socket with every command that could change the
// host disabled (-b): the agent then refuses a freeze (and, if it is
// disabled too, the thaw) as a guest's agent refuses one it cannot do.
// The freeze that works is TestAgentQuiesce's, in a guest.

// hostAgent starts qemu-ga on the host allowing only the commands in
// allowed, and returns a client on it.
func hostAgent(t *testing.T, allowed ...string) *guestagent.Client {
	t.Helper()
	prog, err := exec.LookPath("qemu-ga")
	if err != nil {
		t.Fatalf("qemu-ga is not installed (scripts/setup.sh installs qemu-guest-agent): %v", err)
	}
	out, err := exec.Command(prog, "-b", "help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "guest-fsfreeze-thaw") {
		t.Fatalf("qemu-ga -b help: %v: %s", err, out)
	}
	var blocked []string
	for _, rpc := range strings.Fields(string(out)) {
		if !strings.HasPrefix(rpc, "guest-sync") && !slices.Contains(allowed, rpc) {
			blocked = append(blocked, rpc)
		}
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "qga.sock")
	cmd := exec.Command(prog, "-m", "unix-listen", "-p", sock, "-t", dir, "-f", filepath.Join(dir, "qga.pid"), "-b", strings.Join(blocked, ","))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			c := guestagent.New(conn, nil)
			t.Cleanup(func() { c.Close() })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-ga did not listen on %s within 10 s: %v", sock, err)
		}
	}
}

// logBuffer is a slog handler's output, read while others write it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// agentVM is a VM with one disk whose running instance talks to agent.
func agentVM(agent *guestagent.Client) (*VM, *logBuffer) {
	var logs logBuffer
	vm := &VM{log: slog.New(slog.NewTextHandler(&logs, nil)), quiesce: defaultQuiesce,
		disks: []*vmDisk{{Disk: Disk{Path: "disk.vhd"}}}, inst: &instance{agent: agent}}
	return vm, &logs
}

// TestFreezeRefused: a freeze the agent refuses is an error, and the
// thaw was sent before Freeze returned; when the thaw is refused too,
// Freeze's error says so and the log has it as an error (the guest's
// writes may stay blocked).
func TestFreezeRefused(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	vm, logs := agentVM(hostAgent(t, "guest-ping", "guest-fsfreeze-thaw"))
	thaw, quiesced, err := vm.Freeze(ctx, "disk0")
	if err == nil || quiesced || thaw != nil || !strings.Contains(err.Error(), "freeze the guest's filesystems") || strings.Contains(err.Error(), "thaw") {
		t.Fatalf("a refused freeze: thaw %v, quiesced %v, %v", thaw != nil, quiesced, err)
	}
	if !strings.Contains(logs.String(), "the guest's filesystems are thawed") {
		t.Fatalf("a refused freeze was not thawed:\n%s", logs)
	}
	if vm.freezer.cur != nil {
		t.Fatal("a refused freeze is held")
	}

	vm, logs = agentVM(hostAgent(t, "guest-ping"))
	_, _, err = vm.Freeze(ctx, "disk0")
	var refused *guestagent.Error
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "thaw the guest's filesystems") || !strings.Contains(err.Error(), "fsfreeze -u") {
		t.Fatalf("a refused freeze and thaw: %v", err)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "MAY STILL BE FROZEN") {
		t.Fatalf("a failed thaw was not logged as an error:\n%s", logs)
	}
}

// TestFreezeNoAgent: an agent that does not answer (stopped) gives
// quiesced false and a no-op thaw within the ping's deadline; a guest
// disk is needed (another export is never frozen), and a cancelled
// context is an error, not a crash-consistent point.
func TestFreezeNoAgent(t *testing.T) {
	t.Parallel()
	a, peer := net.Pipe() // nobody reads: a guest with no agent
	defer peer.Close()
	agent := guestagent.New(a, nil)
	defer agent.Close()
	vm, logs := agentVM(agent)
	vm.quiesce.ping = 300 * time.Millisecond
	start := time.Now()
	thaw, quiesced, err := vm.Freeze(context.Background(), "disk0")
	if err != nil || quiesced || thaw == nil || thaw() != nil {
		t.Fatalf("no agent: quiesced %v, %v", quiesced, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("no agent took %v", d)
	}
	if !strings.Contains(logs.String(), "crash-consistent") {
		t.Fatalf("the log does not say the point is crash-consistent:\n%s", logs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := vm.Freeze(ctx, "disk0"); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled freeze: %v", err)
	}
	if thaw, quiesced, err := vm.Freeze(context.Background(), "backup"); err != nil || quiesced || thaw() != nil {
		t.Fatalf("an export that is not the guest's: %v, %v", quiesced, err)
	}
}
