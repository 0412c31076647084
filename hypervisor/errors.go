package hypervisor

import "errors"

// Errors callers test for.
var (
	// ErrNotRunning: a VM verb (Pause, Save...) while no QEMU runs.
	ErrNotRunning = errors.New("the guest is not running")
	// ErrKVM: --accel kvm, and KVM cannot be used or does not work.
	ErrKVM = errors.New("KVM does not work here")
	// ErrQEMUExited: QEMU ended without the guest powering off (it
	// failed, was killed, or the guest reset under -no-reboot).
	ErrQEMUExited = errors.New("QEMU ended without a clean guest poweroff")
	// ErrPowerdownTimeout: the guest did not power off within the
	// timeout after the ACPI powerdown; QEMU was told to quit.
	ErrPowerdownTimeout = errors.New("the guest did not power off in time")
	// ErrCannotSave: the guest cannot be saved as it runs (a disk on an
	// undo disk).
	ErrCannotSave = errors.New("the guest cannot be saved")
	// ErrBadState: a saved state that cannot be restored (missing,
	// damaged or from another machine).
	ErrBadState = errors.New("the saved state cannot be restored")
)
