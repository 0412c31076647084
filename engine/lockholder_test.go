package engine

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLockErrorNamesHolder: an image locked by another process (flock(1)
// holding it, as a vhd mount or server would) is refused with an error
// naming that process, and naming no flag: which one helps, if any,
// depends on the command, so the command says it.
func TestLockErrorNamesHolder(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Fatalf("flock (util-linux) is missing: run scripts/setup.sh")
	}
	path := filepath.Join(t.TempDir(), "d.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	// --close: sleep does not inherit the lock, flock(1) alone holds it;
	// its own process group, so both go at the end.
	holder := exec.Command("flock", "--exclusive", "--close", path, "sleep", "60")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		syscall.Kill(-holder.Process.Pid, syscall.SIGKILL)
		holder.Wait()
	}
	defer stop()
	var le *LockedError
	deadline := time.Now().Add(10 * time.Second)
	for {
		var img *Image
		img, err = Open(path, Options{ReadOnly: true})
		if errors.As(err, &le) || time.Now().After(deadline) {
			break
		}
		if err == nil {
			img.Close() // flock(1) has not locked it yet: let it
		}
		time.Sleep(20 * time.Millisecond)
	}
	if le == nil || !errors.Is(err, ErrLocked) {
		t.Fatalf("open while flock(1) holds it: %v, want a LockedError", err)
	}
	if le.PID != holder.Process.Pid || le.Command != "flock" {
		t.Errorf("holder pid %d (%q), want %d (flock)", le.PID, le.Command, holder.Process.Pid)
	}
	for _, want := range []string{path, "flock", "open for writing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "--") {
		t.Errorf("error %q names a flag", err)
	}
	if err := CheckLock(path, false); !errors.As(err, &le) {
		t.Errorf("CheckLock while held: %v", err)
	}
	stop()
	// flock(1)'s child may still be dying with the lock's file
	// description inherited (killed between its fork and its --close):
	// the lock goes when that child's exit closes it, soon after.
	released := time.Now().Add(5 * time.Second)
	for err = CheckLock(path, true); err != nil && time.Now().Before(released); err = CheckLock(path, true) {
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("CheckLock 5 s after the holder was killed: %v", err)
	}
	checkClean(t, path)
}
