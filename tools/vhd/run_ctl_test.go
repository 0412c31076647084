package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"vhdkit/hypervisor/testguest"
	"vhdkit/service"
)

// sectorCounter is the number a counter guest wrote to the first sector
// of a raw copy of its disk.
func sectorCounter(t *testing.T, raw []byte) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(string(bytes.TrimRight(raw[:512], "\x00"))))
	if err != nil {
		t.Fatalf("no counter in the first sector: %q", raw[:16])
	}
	return n
}

// nbdcopyRaw copies an NBD export to a raw file and returns its bytes.
func nbdcopyRaw(t *testing.T, uri, dest string) []byte {
	t.Helper()
	if out, err := exec.Command("nbdcopy", uri, dest).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy %s: %v: %s", uri, err, out)
	}
	b, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRunControlCLI drives a running guest through its control socket
// from the command line, as a user would. The guest counts, writing each
// number to its disk. vhd run prints control:PATH (the default,
// run-PID.ctl; the pid works too). While the guest writes: a live
// snapshot, a read-only view of the frozen layer that nbdcopy reads
// twice, seconds apart, byte for byte the same while the live disk
// moves on; the guest's own disk cannot be removed, the view can; a
// live merge folds the snapshot back. vm pause stops the counter and vm
// resume continues it; vm save saves memory and disks, and vm powerdown
// ends the run with status 0. vhd run --restore of the state goes on
// counting from the saved moment, with no reboot; vm reset ends it
// (-no-reboot), with status 1.
func TestRunControlCLI(t *testing.T) {
	for _, tool := range []string{"nbdcopy", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (scripts/setup.sh installs it): %v", tool, err)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.vhd")
	vhdOK(t, "create", "--size", "8M", img)
	kernel, initrd, err := testguest.Build(dir, counterGuest, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendLine := strings.ReplaceAll(testguest.Append, "quiet", "") // the kernel banner shows a boot
	r := startRun(t, filepath.Join(dir, "console.txt"), "--disk", img, "--kernel", kernel, "--initrd", initrd,
		"--append", appendLine, "--accel", "tcg", "--memory", "256M", "--qemu-arg=-no-reboot")
	if want := fmt.Sprintf("run-%d.ctl", r.cmd.Process.Pid); filepath.Base(r.control) != want {
		t.Errorf("the default control socket is %s, want %s", r.control, want)
	}
	at := r.waitConsole(t, "tick 3 ", 0, guestTimeout)

	if out := r.ctl(t, 0, "vm", "status").stdout; !strings.Contains(out, "running under tcg") || !strings.Contains(out, "disk0 ("+img+")") {
		t.Errorf("vm status:\n%s", out)
	}
	var st service.VMStatus
	vhdJSON(t, &st, "ctl", "--json", strconv.Itoa(r.cmd.Process.Pid), "vm", "status")
	if st.State != "running" || st.PID == 0 || len(st.Disks) != 1 || st.Disks[0].Export != "disk0" || st.NBDSocket == "" {
		t.Fatalf("vm status --json by pid: %+v", st)
	}
	liveURI := "nbd+unix:///disk0?socket=" + st.NBDSocket

	// A backup's point while the guest writes.
	n, _ := ticksIn(readFile(t, r.console))
	before := n[len(n)-1]
	top2 := filepath.Join(dir, "disk-2.vhd")
	r.ctl(t, 0, "snapshot", "disk0", top2)
	add := r.ctl(t, 0, "add", "backup", "--view-of", "disk0")
	viewURI := strings.TrimSpace(add.stdout)
	if !strings.HasPrefix(viewURI, "nbd+unix:///backup?socket=") {
		t.Fatalf("add --view-of printed %q", add.stdout)
	}
	frozen := nbdcopyRaw(t, viewURI, filepath.Join(dir, "frozen1.raw"))
	at = r.waitConsole(t, fmt.Sprintf("tick %d ", before+6), at, time.Minute)
	if again := nbdcopyRaw(t, viewURI, filepath.Join(dir, "frozen2.raw")); !bytes.Equal(again, frozen) {
		t.Fatal("the frozen layer read differently seconds later, while the guest wrote")
	}
	live := nbdcopyRaw(t, liveURI, filepath.Join(dir, "live.raw"))
	if f, l := sectorCounter(t, frozen), sectorCounter(t, live); f < before || l <= f+3 {
		t.Fatalf("the frozen layer holds tick %d (the last before the snapshot: %d), the live disk %d", f, before, l)
	}
	if res := r.ctl(t, 1, "remove", "disk0"); !strings.Contains(res.stderr, "disk of the running guest") {
		t.Errorf("removing the guest's disk: %s", res)
	}
	r.ctl(t, 0, "remove", "backup")
	r.ctl(t, 0, "merge", "--no-progress", "disk0")
	var ex service.ExportStatus
	vhdJSON(t, &ex, "ctl", "--json", r.control, "snapshot", "disk0", top2+".unused")
	if len(ex.Layers) != 2 || ex.Layers[1] != img {
		t.Errorf("after the live merge and one more snapshot the layers are %v, want the new top over %s", ex.Layers, img)
	}
	r.ctl(t, 0, "merge", "--no-progress", "disk0")

	// Pause and resume: the counter stops and goes on.
	r.ctl(t, 0, "vm", "pause")
	time.Sleep(time.Second) // the console drains
	n, _ = ticksIn(readFile(t, r.console))
	paused := n[len(n)-1]
	time.Sleep(2 * time.Second)
	if n, _ = ticksIn(readFile(t, r.console)); n[len(n)-1] != paused {
		t.Fatalf("the counter went on while paused: %d after %d", n[len(n)-1], paused)
	}
	vhdJSON(t, &st, "ctl", "--json", r.control, "vm", "status")
	if st.State != "paused" {
		t.Fatalf("a paused guest's state: %q", st.State)
	}
	r.ctl(t, 0, "vm", "resume")
	at = r.waitConsole(t, fmt.Sprintf("tick %d ", paused+2), at, time.Minute)

	// Save (paused first, so the saved moment is known), then power down.
	r.ctl(t, 0, "vm", "pause")
	time.Sleep(time.Second)
	n, up := ticksIn(readFile(t, r.console))
	last, lastUp := n[len(n)-1], up[len(up)-1]
	state := filepath.Join(dir, "state")
	if out := r.ctl(t, 0, "vm", "save", state).stdout; !strings.Contains(out, "vhd run --restore "+state) {
		t.Errorf("vm save said:\n%s", out)
	}
	r.ctl(t, 0, "vm", "resume")
	r.waitConsole(t, fmt.Sprintf("tick %d ", last+2), at, time.Minute)
	r.ctl(t, 0, "vm", "powerdown")
	if err := r.wait(t); err != nil {
		t.Fatalf("vhd run after vm powerdown: %v; console:\n%s", err, readFile(t, r.console))
	}

	r2 := startRun(t, filepath.Join(dir, "console2.txt"), "--restore", state, "--control", filepath.Join(dir, "run2.ctl"))
	r2.waitConsole(t, fmt.Sprintf("tick %d ", last+3), 0, guestTimeout)
	out := readFile(t, r2.console)
	n2, up2 := ticksIn(out)
	if n2[0] != last+1 || up2[0] <= lastUp {
		t.Errorf("the restored guest printed tick %d at uptime %v first; the save came after tick %d at %v", n2[0], up2[0], last, lastUp)
	}
	if strings.Contains(out, "Linux version") || strings.Contains(out, testguest.BootBanner) {
		t.Errorf("the restored guest booted again:\n%s", out)
	}
	// The reset button: under -no-reboot (saved with the machine) QEMU
	// ends, which is not a poweroff.
	r2.ctl(t, 0, "vm", "reset")
	if err := r2.wait(t); err == nil || !strings.Contains(r2.stderr.String(), "shutdown: host-qmp-system-reset") {
		t.Fatalf("the restored run after vm reset: %v; stderr:\n%s", err, r2.stderr.String())
	}
	if _, err := os.Stat(top2); !os.IsNotExist(err) {
		t.Errorf("the merged snapshot %s is still there: %v", top2, err)
	}
	for _, p := range []string{img, filepath.Join(dir, "disk-state.vhd"), filepath.Join(state, "disk0-disk.vhd")} {
		checkOK(t, p)
	}
}
