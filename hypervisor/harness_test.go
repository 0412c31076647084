package hypervisor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/hypervisor/testguest"
)

// The guests these tests boot: the installed kernel and a busybox
// initramfs (testguest), under TCG unless a test says otherwise, with
// -no-reboot so that a guest that panics or resets ends the run instead
// of booting again.

// bootTimeout bounds a guest's whole run: it boots in 6-8 s under TCG on
// an idle machine; tests run several at once on two shared cores.
const bootTimeout = 4 * time.Minute

// consoleWatch is a guest's console as a test sees it: everything it
// printed, and a way to wait for a line.
type consoleWatch struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
	ch chan struct{} // closed and replaced at every write
}

func newConsoleWatch(t testing.TB) *consoleWatch {
	return &consoleWatch{t: t, ch: make(chan struct{})}
}

func (w *consoleWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	close(w.ch)
	w.ch = make(chan struct{})
	return len(p), nil
}

func (w *consoleWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// waitFor waits until the console has printed s after position from
// (a byte offset) and returns the offset just past it.
func (w *consoleWatch) waitFor(s string, from int, timeout time.Duration) int {
	w.t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		out, ch := w.b.String(), w.ch
		w.mu.Unlock()
		if i := strings.Index(out[min(from, len(out)):], s); i >= 0 {
			return min(from, len(out)) + i + len(s)
		}
		select {
		case <-ch:
		case <-deadline:
			w.t.Fatalf("the guest did not print %q within %v; its console:\n%s", s, timeout, out)
		}
	}
}

// testLogger logs into the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// guestConfig is a run of script (with files beside it in the guest's
// root) on disks, under TCG.
func guestConfig(t testing.TB, script string, files map[string][]byte, disks ...Disk) (Config, *consoleWatch) {
	t.Helper()
	return guestConfigFor(t, testguest.Guest{Script: script, Files: files}, disks...)
}

// guestConfigFor is guestConfig for a guest with programs and modules.
func guestConfigFor(t testing.TB, g testguest.Guest, disks ...Disk) (Config, *consoleWatch) {
	t.Helper()
	kernel, initrd, err := testguest.BuildGuest(t.TempDir(), g)
	if err != nil {
		t.Fatal(err)
	}
	con := newConsoleWatch(t)
	return Config{
		Name: t.Name(), Disks: disks, Kernel: kernel, Initrd: initrd, Append: testguest.Append,
		Memory: 256 << 20, Accel: AccelTCG, Console: con, QEMUArgs: []string{"-no-reboot"},
		Logger: testLogger(t), PowerdownTimeout: time.Minute,
	}, con
}

// runGuest runs cfg to its end and returns Run's error.
func runGuest(t testing.TB, cfg Config) error {
	t.Helper()
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	return vm.Run(ctx)
}

// startGuest starts cfg in the background; wait returns Run's error.
func startGuest(t testing.TB, ctx context.Context, cfg Config) (vm *VM, wait func() error) {
	t.Helper()
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- vm.Run(ctx) }()
	var once sync.Once
	var runErr error
	wait = func() error {
		once.Do(func() {
			select {
			case runErr = <-done:
			case <-time.After(bootTimeout):
				t.Fatal("the run did not end")
			}
		})
		return runErr
	}
	t.Cleanup(func() { wait() })
	select {
	case <-vm.Started():
	case <-time.After(bootTimeout):
		t.Fatal("the guest did not start")
	}
	return vm, wait
}

// pattern is n bytes of a seeded pseudo-random stream.
func pattern(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// makeImage creates an image of size bytes (dynamic, or fixed) holding
// data at off.
func makeImage(t testing.TB, path string, typ engine.DiskType, size int64, data []byte, off int64) {
	t.Helper()
	img, err := engine.Create(path, engine.CreateOptions{Type: typ, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if data != nil {
		if _, err := img.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

// readDisk reads n bytes at off of the chain at path, through the engine.
func readDisk(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	c, err := chains.Open(path, chains.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, n)
	if _, err := c.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func checkClean(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		rep, err := engine.CheckPath(p, engine.CheckOptions{Bitmaps: true})
		if err != nil {
			t.Fatalf("check %s: %v", p, err)
		}
		for _, pr := range rep.Problems {
			t.Errorf("check %s: %s", p, pr)
		}
	}
}

// unlocked fails unless path can be opened for writing (no lock left).
func unlocked(t testing.TB, path string) {
	t.Helper()
	img, err := engine.Open(path, engine.Options{})
	if err != nil {
		t.Fatalf("%s is still locked or unusable after the run: %v", path, err)
	}
	img.Close()
}

// writeScript is guest shell that writes /pattern to dev at byte offset
// off (a multiple of 64 KiB), fsyncs, and prints what it did.
func writeScript(dev string, off int64) string {
	return fmt.Sprintf("dd if=/pattern of=/dev/%s bs=65536 seek=%d conv=fsync 2>/dev/null && echo \"wrote %s\"\n", dev, off/65536, dev)
}
