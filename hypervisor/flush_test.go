package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"vhdkit/engine"
)

// flushRecorder serves a disk and keeps, at every flush that succeeds,
// what the watched range held: what the guest's flushes made durable,
// whatever the runner does later (its own flush at teardown cannot make
// a dropped guest flush look kept).
type flushRecorder struct {
	engine.Disk
	off, n int64
	mu     sync.Mutex
	kept   []byte // guarded by mu
}

func (r *flushRecorder) Flush() error {
	if err := r.Disk.Flush(); err != nil {
		return err
	}
	b := make([]byte, r.n)
	if _, err := r.Disk.ReadAt(b, r.off); err != nil {
		return err
	}
	r.mu.Lock()
	r.kept = b
	r.mu.Unlock()
	return nil
}

func (r *flushRecorder) durable() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kept
}

// TestFlushHonesty: QEMU is SIGKILLed right after the guest prints that
// its fsync returned: the guest's data was flushed by then (the guest's
// fsync reached the disk as NBD FLUSH, and Flush returned before the
// guest went on), it is in the image after the run, the run ends with
// QEMU's error, and the image is closed (unlocked) and checks clean.
func TestFlushHonesty(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.vhd")
	makeImage(t, img, engine.TypeDynamic, 64<<20, nil, 0)
	pat := pattern(2, 2<<20)
	const off = 7 << 20
	script := "cat /sys/block/vda/queue/write_cache\n" + writeScript("vda", off) + "echo FSYNC-RETURNED\nsleep 600\n"
	cfg, con := guestConfig(t, script, map[string][]byte{"pattern": pat}, Disk{Path: img})
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := &flushRecorder{off: off, n: int64(len(pat))}
	vm.wrapDisk = func(d engine.Disk) engine.Disk { rec.Disk = d; return rec }
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- vm.Run(ctx) }()
	con.waitFor("FSYNC-RETURNED", 0, bootTimeout)
	inst := vm.running()
	if inst == nil {
		t.Fatal("no QEMU running")
	}
	inst.cmd.Process.Kill()
	// The state at the kill: the guest's flushes, nothing of the
	// runner's teardown yet.
	if got := rec.durable(); !bytes.Equal(got, pat) {
		t.Fatalf("when the guest printed that fsync returned, its data had not been flushed (%d bytes recorded)", len(got))
	}
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the run did not end after QEMU was killed")
	}
	if !errors.Is(err, ErrQEMUExited) {
		t.Fatalf("run ended with %v, want ErrQEMUExited", err)
	}
	t.Logf("the run said: %v; console:\n%s", err, con)
	if got := readDisk(t, img, off, len(pat)); !bytes.Equal(got, pat) {
		t.Fatal("the image does not hold the guest's data")
	}
	unlocked(t, img)
	checkClean(t, img)
}
