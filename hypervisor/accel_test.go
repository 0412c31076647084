package hypervisor

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// fakeGuest is a guest whose behaviour the test decides: it shows life
// at once, never, or its QEMU exits.
type fakeGuest struct {
	accel     Accel
	lifeCh    chan struct{}
	goneCh    chan struct{}
	abandoned bool
}

func (g *fakeGuest) life() <-chan struct{} { return g.lifeCh }
func (g *fakeGuest) gone() <-chan struct{} { return g.goneCh }
func (g *fakeGuest) failure() error        { return errors.New("QEMU exited: MSR 0x10a") }
func (g *fakeGuest) abandon()              { g.abandoned = true }

// TestProber: the accelerator choice with the KVM check and the guest's
// behaviour injected, so it does not depend on this machine's KVM.
func TestProber(t *testing.T) {
	errNoKVM := errors.New("there is no /dev/kvm")
	cases := []struct {
		name     string
		mode     Accel
		kvm      error
		kvmGuest string // "life", "silent", "exits"
		want     Accel
		wantErr  error
		note     string
		tries    string
	}{
		{name: "tcg", mode: AccelTCG, kvm: nil, want: AccelTCG, tries: "tcg"},
		{name: "auto, KVM works", mode: AccelAuto, kvmGuest: "life", want: AccelKVM, tries: "kvm"},
		{name: "auto, no /dev/kvm", mode: AccelAuto, kvm: errNoKVM, want: AccelTCG, note: "no /dev/kvm", tries: "tcg"},
		{name: "auto, silent under KVM", mode: AccelAuto, kvmGuest: "silent", want: AccelTCG, note: "printed nothing", tries: "kvm tcg"},
		{name: "auto, QEMU fails under KVM", mode: AccelAuto, kvmGuest: "exits", want: AccelTCG, note: "MSR 0x10a", tries: "kvm tcg"},
		{name: "kvm, works", mode: AccelKVM, kvmGuest: "life", want: AccelKVM, tries: "kvm"},
		{name: "kvm, silent", mode: AccelKVM, kvmGuest: "silent", wantErr: ErrKVM, tries: "kvm"},
		{name: "kvm, no /dev/kvm", mode: AccelKVM, kvm: errNoKVM, wantErr: ErrKVM, tries: ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tries []string
			var started []*fakeGuest
			p := prober{mode: c.mode, kvmCheck: func() error { return c.kvm }, deadline: 50 * time.Millisecond,
				log: slog.New(slog.DiscardHandler),
				start: func(_ context.Context, a Accel) (guest, error) {
					tries = append(tries, string(a))
					g := &fakeGuest{accel: a, lifeCh: make(chan struct{}), goneCh: make(chan struct{})}
					switch {
					case a == AccelTCG || c.kvmGuest == "life":
						close(g.lifeCh)
					case c.kvmGuest == "exits":
						close(g.goneCh)
					}
					started = append(started, g)
					return g, nil
				}}
			t0 := time.Now()
			g, got, note, err := p.run(context.Background())
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("got %v, want %v", err, c.wantErr)
				}
			} else if err != nil || got != c.want || g.(*fakeGuest).accel != c.want {
				t.Fatalf("got %v %v, want %v", got, err, c.want)
			}
			if !strings.Contains(note, c.note) {
				t.Errorf("note %q, want it to say %q", note, c.note)
			}
			if strings.Join(tries, " ") != c.tries {
				t.Errorf("started %v, want %q", tries, c.tries)
			}
			if c.kvmGuest == "silent" && !started[0].abandoned {
				t.Error("the silent KVM guest was not stopped")
			}
			if time.Since(t0) > 5*time.Second {
				t.Errorf("the choice took %v", time.Since(t0))
			}
		})
	}
}

// TestProberCancelled: ending the context during the probe ends it.
func TestProberCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	g := &fakeGuest{lifeCh: make(chan struct{}), goneCh: make(chan struct{})}
	p := prober{mode: AccelAuto, kvmCheck: func() error { return nil }, deadline: time.Hour, log: slog.New(slog.DiscardHandler),
		start: func(context.Context, Accel) (guest, error) { cancel(); return g, nil }}
	if _, _, _, err := p.run(ctx); !errors.Is(err, context.Canceled) || !g.abandoned {
		t.Fatalf("got %v (abandoned %v)", err, g.abandoned)
	}
}
