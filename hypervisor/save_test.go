package hypervisor

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"vhdkit/engine"
	"vhdkit/hypervisor/testguest"
)

// counterScript counts forever: each tick writes its number to the
// disk's first sector (fsynced) and prints it with the guest's uptime.
const counterScript = `i=0
while true; do
  i=$((i+1))
  echo "$i" | dd of=/dev/vda bs=512 conv=sync,fsync 2>/dev/null
  echo "tick $i $(cut -d' ' -f1 /proc/uptime)"
  sleep 0.3
done
`

var tickLine = regexp.MustCompile(`tick (\d+) ([0-9.]+)`)

// ticks are the counter's lines in out: numbers and uptimes.
func ticks(out string) (n []int, up []float64) {
	for _, m := range tickLine.FindAllStringSubmatch(out, -1) {
		i, _ := strconv.Atoi(m[1])
		u, _ := strconv.ParseFloat(m[2], 64)
		n, up = append(n, i), append(up, u)
	}
	return n, up
}

// diskCounter is the number the counter last wrote to the disk at path.
func diskCounter(t *testing.T, path string) int {
	t.Helper()
	b := readDisk(t, path, 0, 512)
	n, err := strconv.Atoi(strings.TrimSpace(string(bytes.TrimRight(b, "\x00"))))
	if err != nil {
		t.Fatalf("%s: no counter in its first sector: %q", path, b[:16])
	}
	return n
}

// TestSaveRestore: a guest counting is paused and saved (memory and a
// snapshot of its disk in one paused moment), runs on and is powered
// down (SIGTERM's path: the ACPI button, a clean poweroff). Restoring
// the state continues the count from the saved moment: the next tick is
// the one after the last printed before the save, the uptime keeps
// growing, and the guest does not boot again (no kernel or boot banner).
// The restored guest writes to a new top over the frozen layer; a second
// restore of the same state is refused while that top holds its writes.
func TestSaveRestore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.vhd")
	makeImage(t, img, engine.TypeDynamic, 32<<20, nil, 0)
	cfg, con := guestConfig(t, counterScript, nil, Disk{Path: img})
	cfg.Append = strings.ReplaceAll(cfg.Append, "quiet", "") // the kernel banner shows a boot
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	vm, wait := startGuest(t, ctx, cfg)
	con.waitFor("tick 3 ", 0, bootTimeout)
	if err := vm.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the console drains
	n, up := ticks(con.String())
	last, lastUp := n[len(n)-1], up[len(up)-1]
	state := filepath.Join(dir, "state1")
	m, err := vm.Save(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := vm.Status(ctx); st.State != "paused" && st.State != "postmigrate" {
		t.Fatalf("a guest paused before the save is %q after it", st.State)
	}
	if err := vm.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	con.waitFor("tick "+strconv.Itoa(last+2)+" ", 0, time.Minute)
	cancel() // SIGTERM: the ACPI powerdown; the guest powers off
	if err := wait(); err != nil {
		t.Fatalf("the saved guest's run: %v\nconsole:\n%s", err, con)
	}
	frozen, continued := m.Disks[0].Layer, m.Disks[0].ContinuedOn
	if frozen != img || continued == "" {
		t.Fatalf("manifest disks %+v", m.Disks)
	}
	if c := diskCounter(t, frozen); c != last && c != last+1 {
		t.Errorf("the frozen layer holds tick %d, the save came after tick %d", c, last)
	}
	if c := diskCounter(t, continued); c <= last+1 {
		t.Errorf("the saving run went on writing its new top, which holds tick %d only", c)
	}
	checkClean(t, frozen, continued)

	con2 := newConsoleWatch(t)
	rcfg := Config{Restore: state, Console: con2, Logger: testLogger(t), PowerdownTimeout: time.Minute}
	ctx2, cancel2 := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel2()
	vm2, wait2 := startGuest(t, ctx2, rcfg)
	if st, err := vm2.Status(ctx2); err != nil || st.Accel != AccelTCG {
		t.Fatalf("restored status %+v %v", st, err)
	}
	con2.waitFor("tick "+strconv.Itoa(last+3)+" ", 0, time.Minute)
	cancel2()
	if err := wait2(); err != nil {
		t.Fatalf("the restored run: %v\nconsole:\n%s", err, con2)
	}
	out := con2.String()
	n2, up2 := ticks(out)
	if n2[0] != last+1 || up2[0] <= lastUp {
		t.Errorf("after the restore the guest printed tick %d at uptime %v; before the save, tick %d at %v", n2[0], up2[0], last, lastUp)
	}
	if strings.Contains(out, "Linux version") || strings.Contains(out, testguest.BootBanner) {
		t.Errorf("the restored guest booted again:\n%s", out)
	}
	top := restoreTop(state, 0, m.Disks[0])
	if c := diskCounter(t, top); c <= last+1 {
		t.Errorf("the restored guest's top holds tick %d", c)
	}
	checkClean(t, top, frozen, continued)

	// Restoring again would put the saved memory over a disk that has
	// moved on: refused, saying what to do.
	vm3, err := New(Config{Restore: state, Console: newConsoleWatch(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := vm3.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "earlier restore") {
		t.Fatalf("a second restore over a written top: %v", err)
	}
	if _, err := os.Stat(state + ".saving"); err == nil {
		t.Error("a temporary state folder was left")
	}
}
