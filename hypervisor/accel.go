package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Why an accelerator probe: on this project's machines /dev/kvm exists
// but is nested, paravirtualised KVM under which a stock kernel hangs
// in its real-mode setup, before printing anything, and `-cpu host`
// aborts. KVM initialises, so QEMU's own fallback (`-accel kvm -accel
// tcg`) never falls back. Only the guest can tell: under working KVM a
// kernel prints on its console within a second, so a guest silent for
// the probe's deadline means KVM does not work for it, and TCG is used.

// kvmUsable says why /dev/kvm cannot be used, or nil if it can: it
// opens and answers KVM_GET_API_VERSION with the stable version 12.
func kvmUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return errors.New("there is no /dev/kvm (no KVM in this kernel or virtual machine)")
	case errors.Is(err, os.ErrPermission):
		return errors.New("no permission to open /dev/kvm (join the kvm group)")
	case err != nil:
		return fmt.Errorf("/dev/kvm: %w", err)
	}
	defer f.Close()
	const kvmGetAPIVersion = 0xAE00
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != 12 {
		return fmt.Errorf("/dev/kvm does not answer as KVM does (API version %d, %v)", v, err)
	}
	return nil
}

// guest is a started QEMU as the probe sees it.
type guest interface {
	// life is closed at the guest's first console output.
	life() <-chan struct{}
	// gone is closed when QEMU has exited; failure then says how.
	gone() <-chan struct{}
	failure() error
	// abandon stops QEMU and waits for it.
	abandon()
}

// prober chooses the accelerator and starts the guest under it.
type prober struct {
	mode     Accel
	kvmCheck func() error // kvmUsable, or a test's
	deadline time.Duration
	start    func(ctx context.Context, a Accel) (guest, error)
	log      *slog.Logger
}

// run starts the guest: under TCG for AccelTCG; under KVM, kept only if
// the guest shows life within the deadline, for AccelKVM (which fails
// otherwise) and AccelAuto (which falls back to TCG and says why). note
// is that reason, empty when the first choice held.
func (p prober) run(ctx context.Context) (g guest, chosen Accel, note string, err error) {
	if p.mode == AccelTCG {
		g, err = p.start(ctx, AccelTCG)
		return g, AccelTCG, "", err
	}
	why := p.kvmCheck()
	if why == nil {
		g, why = p.tryKVM(ctx)
		if g != nil {
			return g, AccelKVM, "", nil
		}
		if ctx.Err() != nil {
			return nil, "", "", ctx.Err()
		}
	}
	if p.mode == AccelKVM {
		return nil, "", "", fmt.Errorf("KVM was required: %w: %v; run the guest under TCG ('vhd run --accel tcg') or let the runner choose ('vhd run --accel auto')", ErrKVM, why)
	}
	note = fmt.Sprintf("KVM not used: %v; running under TCG (slower)", why)
	p.log.Warn(note)
	g, err = p.start(ctx, AccelTCG)
	return g, AccelTCG, note, err
}

// tryKVM starts the guest under KVM and waits for its first sign of
// life. A guest that stays silent, or a QEMU that exits, is the reason
// KVM is not used (the QEMU is stopped).
func (p prober) tryKVM(ctx context.Context) (guest, error) {
	g, err := p.start(ctx, AccelKVM)
	if err != nil {
		return nil, fmt.Errorf("QEMU failed under KVM: %w", err)
	}
	timer := time.NewTimer(p.deadline)
	defer timer.Stop()
	select {
	case <-g.life():
		return g, nil
	case <-g.gone():
		return nil, fmt.Errorf("QEMU failed under KVM: %w", g.failure())
	case <-timer.C:
		g.abandon()
		return nil, fmt.Errorf("under KVM the guest printed nothing on its serial console within %v (nested KVM hangs like this)", p.deadline)
	case <-ctx.Done():
		g.abandon()
		return nil, ctx.Err()
	}
}
