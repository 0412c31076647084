package hypervisor

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAccelAutoHere runs --accel auto on this machine. Where KVM does
// not work (no /dev/kvm, or this project's nested KVM, under which the
// kernel hangs before printing anything), the guest must end up under
// TCG within the probe's deadline, with a warning saying why; where KVM
// works, under KVM with no warning. Either way the guest runs to its
// poweroff. (TestProber covers each branch without this machine's KVM.)
func TestAccelAutoHere(t *testing.T) {
	t.Parallel()
	cfg, con := guestConfig(t, "echo AUTO-RAN\n", nil)
	cfg.Accel = AccelAuto
	cfg.ProbeTimeout = 3 * time.Second
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, &logs), nil))
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kvmErr := kvmUsable()
	t.Logf("/dev/kvm: %v", kvmErr)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	t0 := time.Now()
	done := make(chan error, 1)
	go func() { done <- vm.Run(ctx) }()
	<-vm.Started()
	chosenAfter := time.Since(t0)
	st, err := vm.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v\nconsole:\n%s", err, con)
	}
	t.Logf("accelerator %s after %v: %s", st.Accel, chosenAfter, st.AccelNote)
	if !strings.Contains(con.String(), "AUTO-RAN") {
		t.Fatalf("the guest did not run:\n%s", con)
	}
	switch st.Accel {
	case AccelTCG:
		if st.AccelNote == "" || !strings.Contains(logs.String(), "KVM not used") {
			t.Errorf("fell back to TCG without saying why (note %q)", st.AccelNote)
		}
		// The probe's deadline, plus starting QEMU twice.
		if limit := cfg.ProbeTimeout + 2*startTimeout; chosenAfter > limit {
			t.Errorf("TCG was chosen after %v, more than %v", chosenAfter, limit)
		}
		if kvmErr == nil && !strings.Contains(st.AccelNote, "printed nothing") && !strings.Contains(st.AccelNote, "failed under KVM") {
			t.Errorf("KVM is usable here, yet the note does not say the guest failed under it: %q", st.AccelNote)
		}
	case AccelKVM:
		if kvmErr != nil || st.AccelNote != "" {
			t.Errorf("KVM chosen with /dev/kvm %v and note %q", kvmErr, st.AccelNote)
		}
	default:
		t.Fatalf("accelerator %q", st.Accel)
	}
}
