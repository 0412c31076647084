package hypervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"vhdkit/engine"
)

// TestLiveSnapshotWhileRunning: while a guest writes its disk, a live
// snapshot freezes the disk's top under a new one, and a read-only view
// of the frozen layer, exported on the run's NBD socket, is read by
// nbdinfo and nbdcopy (and the engine) as it was at the snapshot while
// the guest's later writes go to the new top. Then the guest ignores the
// ACPI powerdown: the run stops QEMU after the timeout, says so, and
// leaves the images flushed, closed, unlocked and clean.
func TestLiveSnapshotWhileRunning(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"nbdinfo", "nbdcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (scripts/setup.sh installs libnbd-bin): %v", tool, err)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.vhd")
	makeImage(t, img, engine.TypeDynamic, 32<<20, nil, 0)
	a, b := pattern(30, 1<<20), pattern(31, 1<<20)
	script := `dd if=/a of=/dev/vda bs=65536 conv=fsync 2>/dev/null && echo A-WRITTEN
read line
dd if=/b of=/dev/vda bs=65536 conv=fsync 2>/dev/null && echo B-WRITTEN
read line
rm /power-button
echo IGNORING-POWER
sleep 600
`
	cfg, con := guestConfig(t, script, map[string][]byte{"a": a, "b": b}, Disk{Path: img})
	in, typed := io.Pipe()
	cfg.ConsoleIn = in
	cfg.PowerdownTimeout = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	vm, wait := startGuest(t, ctx, cfg)
	at := con.waitFor("A-WRITTEN", 0, bootTimeout)

	c, err := vm.Chain(0)
	if err != nil {
		t.Fatal(err)
	}
	newTop := filepath.Join(dir, "disk-2.vhd")
	if err := c.Snapshot(newTop); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(typed, "go")
	at = con.waitFor("B-WRITTEN", at, time.Minute)

	if err := vm.ExportLayer(ctx, 0, img, "frozen"); err != nil {
		t.Fatal(err)
	}
	uri := "nbd+unix:///frozen?socket=" + vm.NBDSocket()
	out, err := exec.Command("nbdinfo", "--json", uri).Output()
	if err != nil {
		t.Fatalf("nbdinfo: %v", err)
	}
	var info struct {
		Exports []struct {
			Size     int64 `json:"export-size"`
			ReadOnly bool  `json:"is_read_only"`
		} `json:"exports"`
	}
	if err := json.Unmarshal(out, &info); err != nil || len(info.Exports) != 1 || info.Exports[0].Size != 32<<20 || !info.Exports[0].ReadOnly {
		t.Fatalf("nbdinfo: %s (%v)", out, err)
	}
	copied := filepath.Join(dir, "frozen.raw")
	if out, err := exec.Command("nbdcopy", uri, copied).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy: %v: %s", err, out)
	}
	raw, err := os.ReadFile(copied)
	if err != nil || !bytes.Equal(raw[:len(a)], a) {
		t.Fatalf("the frozen layer read over NBD is not the disk at the snapshot (%v)", err)
	}
	if got := readDisk(t, img, 0, len(a)); !bytes.Equal(got, a) {
		t.Fatal("the frozen layer read by the engine is not the disk at the snapshot")
	}
	got := make([]byte, len(b))
	if _, err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("the live disk does not read the guest's later write (%v)", err)
	}
	fmt.Fprintln(typed, "go")
	con.waitFor("IGNORING-POWER", at, time.Minute)

	cancel()
	if err := wait(); !errors.Is(err, ErrPowerdownTimeout) {
		t.Fatalf("a guest ignoring the powerdown: %v", err)
	}
	typed.Close()
	if got := readDisk(t, newTop, 0, len(b)); !bytes.Equal(got, b) {
		t.Fatal("the new top does not hold the guest's write after the run")
	}
	unlocked(t, newTop)
	checkClean(t, img, newTop)
}
