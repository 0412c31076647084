package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The background tests start this test binary again as the server:
// helperEnv says which part it plays.
const helperEnv = "VHDKIT_SERVICE_HELPER"

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(helper(role))
	}
	os.Exit(m.Run())
}

// helper is a background server that gets ready, fails, dies or hangs.
func helper(role string) int {
	pipe := OpenReadyPipe(ReadyFD)
	switch role {
	case "ready":
		fmt.Println("serving")
		pipe.Ready(map[string]int{"pid": os.Getpid()})
		return 0
	case "fail":
		fmt.Println("a detail only the log has")
		err := errors.New("cannot mount: the folder is busy")
		fmt.Println("vhd mount:", err)
		pipe.Fail(err)
		return 1
	case "die":
		fmt.Println("panic: the server died")
		return 2
	case "hang":
		time.Sleep(time.Minute)
	}
	return 3
}

func startHelper(t *testing.T, role string, timeout time.Duration, state any) (log string, err error) {
	t.Helper()
	t.Setenv(helperEnv, role)
	log = filepath.Join(t.TempDir(), "server.log")
	err = StartBackground(context.Background(), Background{What: "the test server", Args: []string{"-test.run=none"}, Log: log, Timeout: timeout}, state)
	return log, err
}

// TestStartBackgroundReady: the state the server sends is what the
// starter gets, and the server runs in a process (and session) of its
// own.
func TestStartBackgroundReady(t *testing.T) {
	var st struct{ PID int }
	if _, err := startHelper(t, "ready", 0, &st); err != nil {
		t.Fatal(err)
	}
	if st.PID <= 0 || st.PID == os.Getpid() {
		t.Fatalf("state from the server: %+v", st)
	}
}

// TestStartBackgroundFailure: the server's own error comes back, with
// the end of its log but without the line repeating that error.
func TestStartBackgroundFailure(t *testing.T) {
	_, err := startHelper(t, "fail", 0, nil)
	if err == nil || err.Error() != "cannot mount: the folder is busy\na detail only the log has" {
		t.Fatalf("error %q", err)
	}
}

// TestStartBackgroundDeath: a server that dies without a word is
// reported, with its log's end.
func TestStartBackgroundDeath(t *testing.T) {
	_, err := startHelper(t, "die", 0, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "the test server exited before it was ready") || !strings.Contains(err.Error(), "panic: the server died") {
		t.Fatalf("error %q", err)
	}
}

// TestStartBackgroundTimeout: a server that never gets ready is told to
// stop, and the error names its log.
func TestStartBackgroundTimeout(t *testing.T) {
	log, err := startHelper(t, "hang", 300*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "did not become ready") || !strings.Contains(err.Error(), log) {
		t.Fatalf("error %q", err)
	}
}

// TestStartBackgroundRefusesLogSymlink: the log is never written
// through a symlink planted in its place.
func TestStartBackgroundRefusesLogSymlink(t *testing.T) {
	dir := t.TempDir()
	victim, log := filepath.Join(dir, "victim"), filepath.Join(dir, "server.log")
	os.WriteFile(victim, []byte("keep"), 0o600)
	os.Symlink(victim, log)
	t.Setenv(helperEnv, "ready")
	err := StartBackground(context.Background(), Background{What: "the test server", Args: []string{"-test.run=none"}, Log: log}, nil)
	if err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Fatalf("error %v", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatal("the file behind the symlink was written")
	}
}

// TestWaitUnlocked: the wait ends when the lock is released, and fails
// with what to say after the timeout.
func TestWaitUnlocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	os.WriteFile(path, nil, 0o600)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	if err := WaitUnlocked(context.Background(), path, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "is still in use after 200ms") {
		t.Fatalf("a held lock: %v", err)
	}
	time.AfterFunc(200*time.Millisecond, func() { unix.Flock(fd, unix.LOCK_UN) })
	start := time.Now()
	if err := WaitUnlocked(context.Background(), path, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("returned after %v, before the lock was released", took)
	}
	ctx, cancel := context.WithCancel(context.Background())
	unix.Flock(fd, unix.LOCK_SH)
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := WaitUnlocked(ctx, path, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("an interrupted wait: %v", err)
	}
}

// TestWaitServerWaitsForItsPid: unmounting waits for the mount's own
// server, not for its image's lock (another mount of the image may hold
// it); only without a pid is the lock waited for. Messages say the whole
// timeout, rounded.
func TestWaitServerWaitsForItsPid(t *testing.T) {
	img := filepath.Join(t.TempDir(), "img")
	os.WriteFile(img, nil, 0o600)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil { // the other mount
		t.Fatal(err)
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	st := &MountState{Image: img, PID: gone.Process.Pid}
	if err := waitServer(context.Background(), st, 2*time.Second); err != nil {
		t.Fatalf("the server exited, another holds the lock: %v", err)
	}
	st.PID = 0
	err = waitServer(context.Background(), st, 150*time.Millisecond)
	if err == nil || !strings.HasSuffix(err.Error(), "is still in use after 150ms") {
		t.Fatalf("no pid, the lock held: %v", err)
	}
	st.PID, st.Log = os.Getpid(), "LOG"
	err = waitServer(context.Background(), st, 150*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "still running 150ms after the unmount") {
		t.Fatalf("a server that does not exit: %v", err)
	}
}
