package hypervisor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/hypervisor/testguest"
)

// agentScript mounts the ext4 filesystem on /dev/vda, starts a writer
// that appends a fsynced record every 0.2 s and says so on the console,
// and, once told to, starts Debian's qemu-guest-agent with a freeze hook
// that prints on the console (testguest.StartAgent).
const agentScript = `mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || echo MOUNT-FAILED
(i=0; while true; do i=$((i+1)); echo "record $i" | dd of=/mnt/log bs=4096 seek=$i conv=notrunc,fsync 2>/dev/null; echo "wrote $i"; sleep 0.2; done) &
echo WRITER-STARTED
read line
` + testguest.StartAgent + `sleep 600
`

// ext4Image makes a dynamic VHD of size bytes holding a fresh ext4
// filesystem (mkfs.ext4 on a raw file, its non-zero blocks copied).
func ext4Image(t *testing.T, path string, size int64) {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Fatalf("mkfs.ext4 is not installed (scripts/setup.sh installs e2fsprogs): %v", err)
	}
	raw := path + ".raw"
	if err := os.WriteFile(raw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", raw).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(raw)
	makeImage(t, path, engine.TypeDynamic, size, nil, 0)
	img, err := engine.Open(path, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 64<<10)
	for off := 0; off < len(data); off += len(zero) {
		if chunk := data[off : off+len(zero)]; !bytes.Equal(chunk, zero) {
			if _, err := img.WriteAt(chunk, int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

// e2fsckClean runs e2fsck -fn on the disk the chain at path reads, and
// fails unless it finds the filesystem clean with nothing to replay.
func e2fsckClean(t *testing.T, path string) {
	t.Helper()
	c, err := chains.Open(path, chains.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(t.TempDir(), "fs.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(f, io.NewSectionReader(c, 0, c.Size()))
	c.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("e2fsck", "-fn", raw).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("journal")) {
		t.Fatalf("e2fsck -fn of %s: %v\n%s", path, err, out)
	}
}

// countLines counts the lines of out that start with prefix.
func countLines(out, prefix string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			n++
		}
	}
	return n
}

// TestAgentPortName: the guests' script finds the agent's port by the
// name the runner gives it.
func TestAgentPortName(t *testing.T) {
	if testguest.AgentPortName != AgentPort {
		t.Fatalf("testguest looks for port %q, the runner names it %q", testguest.AgentPortName, AgentPort)
	}
}

// TestAgentQuiesce runs Debian's qemu-guest-agent in a guest writing an
// ext4 filesystem, over the runner's virtio-serial channel. Before the
// agent runs, Freeze says quiesced=false within its short deadline
// (the bytes it sent wait in the channel, and the agent reads them when
// it starts: the next freeze resynchronises past them). With the agent:
// Freeze freezes (the guest's freeze hook runs, the agent says frozen,
// and the guest's writes stop), a second Freeze shares the freeze, a
// snapshot cut while frozen holds a filesystem e2fsck finds clean with
// no journal to replay, and the last thaw thaws (the hook runs again,
// the writes go on). A freeze nobody thaws is thawed at the limit.
func TestAgentQuiesce(t *testing.T) {
	t.Parallel()
	qga, err := exec.LookPath("qemu-ga")
	if err != nil {
		t.Fatalf("qemu-ga is not installed (scripts/setup.sh installs qemu-guest-agent): %v", err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.vhd")
	ext4Image(t, img, 64<<20)
	cfg, con := guestConfigFor(t, testguest.Guest{Script: agentScript, Programs: []string{qga}, Modules: testguest.Ext4Modules}, Disk{Path: img})
	in, typed := io.Pipe()
	defer typed.Close()
	cfg.ConsoleIn = in
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	vm, wait := startGuest(t, ctx, cfg)
	at := con.waitFor("WRITER-STARTED", 0, bootTimeout)
	if strings.Contains(con.String(), "MOUNT-FAILED") {
		t.Fatalf("the guest could not mount its ext4:\n%s", con)
	}

	start := time.Now()
	thaw, quiesced, err := vm.Freeze(ctx, "disk0")
	if err != nil || quiesced || thaw() != nil {
		t.Fatalf("Freeze with no agent: quiesced %v, %v", quiesced, err)
	}
	if d := time.Since(start); d > vm.quiesce.ping+2*time.Second {
		t.Fatalf("Freeze with no agent took %v", d)
	}
	if _, quiesced, err := vm.Freeze(ctx, "backup"); quiesced || err != nil {
		t.Fatalf("Freeze of an export that is not the guest's: %v, %v", quiesced, err)
	}

	fmt.Fprintln(typed, "go")
	at = con.waitFor("AGENT-STARTED", at, time.Minute)
	agent := vm.running().agent
	if err := agent.Ping(timeoutCtx(t, time.Minute)); err != nil {
		t.Fatalf("the agent does not answer: %v\n%s", err, con)
	}
	thaw1, q1, err := vm.Freeze(ctx, "disk0")
	if err != nil || !q1 {
		t.Fatalf("Freeze with the agent: quiesced %v, %v\n%s", q1, err, con)
	}
	at = con.waitFor("HOOK freeze", at, time.Minute)
	thaw2, q2, err := vm.Freeze(ctx, "disk0")
	if err != nil || !q2 {
		t.Fatalf("a second Freeze: quiesced %v, %v", q2, err)
	}
	if s, err := agent.FreezeStatus(ctx); err != nil || s != "frozen" {
		t.Fatalf("the agent says %q, %v", s, err)
	}
	mark := len(con.String())
	time.Sleep(2 * time.Second)
	if n := countLines(con.String()[mark:], "wrote"); n > 1 {
		t.Fatalf("the guest wrote %d records while frozen:\n%s", n, con.String()[mark:])
	}
	c, err := vm.Chain(0)
	if err != nil {
		t.Fatal(err)
	}
	newTop := filepath.Join(dir, "fs-2.vhd")
	if err := c.Snapshot(newTop); err != nil {
		t.Fatal(err)
	}
	if err := thaw1(); err != nil {
		t.Fatal(err)
	}
	if s, _ := agent.FreezeStatus(ctx); s != "frozen" {
		t.Fatalf("thawed while a second Freeze holds it: %q", s)
	}
	if err := thaw2(); err != nil {
		t.Fatal(err)
	}
	if s, err := agent.FreezeStatus(ctx); err != nil || s != "thawed" {
		t.Fatalf("after the last thaw the agent says %q, %v", s, err)
	}
	at = con.waitFor("HOOK thaw", at, time.Minute)
	mark = len(con.String())
	con.waitFor("wrote", mark, time.Minute)
	con.waitFor("wrote", len(con.String()), time.Minute)

	vm.quiesce.limit = 2 * time.Second
	if _, q, err := vm.Freeze(ctx, "disk0"); err != nil || !q {
		t.Fatalf("a freeze left to its limit: %v, %v", q, err)
	}
	at = con.waitFor("HOOK freeze", at, time.Minute)
	con.waitFor("HOOK thaw", at, time.Minute)
	if s, err := agent.FreezeStatus(ctx); err != nil || s != "thawed" {
		t.Fatalf("past the limit the agent says %q, %v", s, err)
	}

	cancel()
	if err := wait(); err != nil {
		t.Fatalf("the run: %v\n%s", err, con)
	}
	e2fsckClean(t, img)
	checkClean(t, img, newTop)
}

func timeoutCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
