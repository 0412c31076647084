package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"vhdkit/engine"
	"vhdkit/service"
)

// VM is one guest run: its disks served in-process over NBD, QEMU
// attached to them, the console, and the verbs that act on the guest
// while it runs (control.go, save.go). Run runs it once.
type VM struct {
	cfg     Config
	m       machine
	disks   []*vmDisk
	restore *Manifest // set when Config.Restore names a state
	log     *slog.Logger
	// kvmCheck is kvmUsable, or a test's; wrapDisk, if set, wraps each
	// disk as served (a test's recorder).
	kvmCheck func() error
	wrapDisk func(engine.Disk) engine.Disk

	quiesce     quiesceTimes
	freezer     freezer       // the freeze of the guest's filesystems in force (quiesce.go)
	started     chan struct{} // closed once the guest runs (or Run failed to start it)
	saveMu      sync.Mutex    // one Save at a time
	ran         atomic.Bool   // Run runs once
	startedOnce sync.Once

	mu sync.Mutex
	// inst is the running QEMU; nil before and after. host serves the
	// disks; accel and note say what runs the guest and why. saving
	// makes a second Save wait. Guarded by mu.
	inst  *instance
	host  *service.Host
	accel Accel
	note  string
	dir   string
}

// New checks cfg and prepares a run; for a restore it reads the saved
// state's manifest. Nothing is opened or started until Run.
func New(cfg Config) (*VM, error) {
	if cfg.Restore != "" {
		if err := checkRestoreConfig(cfg); err != nil {
			return nil, err
		}
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	vm := &VM{cfg: cfg, log: cfg.Logger, kvmCheck: kvmUsable, quiesce: defaultQuiesce, started: make(chan struct{})}
	if cfg.Restore != "" {
		return vm, vm.prepareRestore()
	}
	if len(cfg.Disks) > maxDisks {
		return nil, fmt.Errorf("%d disks: at most %d", len(cfg.Disks), maxDisks)
	}
	vm.m = machine{Type: "pc", Memory: cfg.Memory, CPUs: cfg.CPUs, Kernel: cfg.Kernel, Initrd: cfg.Initrd, Append: cfg.Append, QEMUArgs: cfg.QEMUArgs, Agent: true}
	for _, d := range cfg.Disks {
		vm.disks = append(vm.disks, &vmDisk{Disk: d, open: d.Path})
	}
	return vm, nil
}

// CommandLine is the QEMU command Run starts under accel (kvm or tcg),
// as a shell would take it; the private folder's name is made at Run.
func (vm *VM) CommandLine(accel Accel) string {
	l := launch{accel: accel, dir: filepath.Join(os.TempDir(), "vhd-run-XXXXXX"), incoming: vm.restore != nil}
	return displayLine(vm.cfg.QEMU, commandLine(vm.cfg.Name, vm.m, vm.attached(), l))
}

// FirstAccel is the accelerator Run tries first, and why it would not
// try KVM.
func (vm *VM) FirstAccel() (Accel, string) {
	a := vm.cfg.Accel
	if vm.restore != nil && a == AccelAuto {
		return vm.restore.Accel, "the saved state's accelerator"
	}
	if a != AccelAuto {
		return a, ""
	}
	if err := vm.kvmCheck(); err != nil {
		return AccelTCG, err.Error()
	}
	return AccelKVM, ""
}

func (vm *VM) attached() []attached {
	var out []attached
	for i, d := range vm.disks {
		out = append(out, attached{export: exportName(i), readOnly: d.ReadOnly})
	}
	return out
}

// Started is closed once the guest runs, or Run failed to start it.
func (vm *VM) Started() <-chan struct{} { return vm.started }

func (vm *VM) markStarted() { vm.startedOnce.Do(func() { close(vm.started) }) }

// Run serves the disks, starts QEMU and waits for the guest to end, then
// flushes and closes the disks and applies the undo policy. It returns
// nil when the guest powered off cleanly. When ctx ends (SIGINT,
// SIGTERM) the guest gets an ACPI powerdown, and QEMU is told to quit if
// the guest has not powered off within Config.PowerdownTimeout. QEMU
// ending any other way is an error carrying its last words. Whatever
// happens, the disks are flushed and closed (their locks released)
// before Run returns.
func (vm *VM) Run(ctx context.Context) error {
	if vm.ran.Swap(true) {
		return errors.New("hypervisor: Run called twice: make a new VM for another run")
	}
	defer vm.markStarted()
	dir, err := os.MkdirTemp("", "vhd-run-") // 0700: the sockets are ours alone
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if vm.restore != nil {
		if err := vm.openRestoreTops(); err != nil {
			return err
		}
	}
	l := launch{dir: dir}
	host, err := serveDisks(ctx, vm.disks, vm.cfg.Undo, vm.cfg.Chains, l, vm.wrapDisk, vm.log)
	if err != nil {
		return err
	}
	if err := vm.listenControl(host); err != nil {
		host.Close()
		return err
	}
	host.SetQuiescer(vm)
	vm.mu.Lock()
	vm.host, vm.dir = host, dir
	vm.mu.Unlock()
	hostCtx, stopHost := context.WithCancel(context.Background())
	hostDone := make(chan error, 1)
	go func() { hostDone <- host.Run(hostCtx) }()

	runErr := vm.boot(ctx, l)
	if runErr == nil {
		runErr = vm.supervise(ctx)
	}
	// The disks are flushed and closed (host teardown) before the undo
	// policy touches their files.
	stopHost()
	hostErr := <-hostDone
	vm.mu.Lock()
	vm.inst, vm.host = nil, nil
	vm.mu.Unlock()
	if hostErr != nil {
		hostErr = fmt.Errorf("closing the disks: %w", hostErr)
	}
	return errors.Join(runErr, hostErr, vm.finishUndo(ctx, runErr == nil && hostErr == nil))
}

// boot starts QEMU: from the saved state, or under the accelerator the
// probe chooses.
func (vm *VM) boot(ctx context.Context, l launch) error {
	if vm.restore != nil {
		return vm.bootRestore(ctx, l)
	}
	p := prober{mode: vm.cfg.Accel, kvmCheck: vm.kvmCheck, deadline: vm.cfg.ProbeTimeout, log: vm.log,
		start: func(ctx context.Context, a Accel) (guest, error) {
			l.accel = a
			return vm.startQEMU(ctx, l)
		}}
	g, accel, note, err := p.run(ctx)
	if err != nil {
		return err
	}
	vm.setRunning(g.(*instance), accel, note)
	return nil
}

func (vm *VM) startQEMU(ctx context.Context, l launch) (*instance, error) {
	l.agent = vm.m.Agent
	args := commandLine(vm.cfg.Name, vm.m, vm.attached(), l)
	vm.log.Info("starting QEMU", "command", displayLine(vm.cfg.QEMU, args))
	return start(ctx, vm.cfg.QEMU, args, l, newConsole(vm.cfg.Console, vm.cfg.ConsoleIn), vm.log)
}

func (vm *VM) setRunning(inst *instance, accel Accel, note string) {
	vm.mu.Lock()
	vm.inst, vm.accel, vm.note = inst, accel, note
	vm.mu.Unlock()
	vm.log.Info("guest running", "accel", accel, "pid", inst.cmd.Process.Pid)
	vm.markStarted()
}

// supervise waits for QEMU to end. ctx ending sends an ACPI powerdown,
// and a guest that has not powered off within the timeout is stopped.
func (vm *VM) supervise(ctx context.Context) error {
	inst := vm.running()
	select {
	case <-inst.exited:
		return inst.wait()
	case <-ctx.Done():
	}
	timeout := vm.cfg.PowerdownTimeout
	vm.log.Warn("powering the guest down (ACPI)", "timeout", timeout)
	pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	perr := inst.qmp.Execute(pctx, "system_powerdown", nil, nil)
	cancel()
	if perr != nil && !errorsIsExit(perr) {
		vm.log.Warn("the ACPI powerdown was not sent", "err", perr)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-inst.exited:
		return inst.wait()
	case <-timer.C:
	}
	inst.stop(10 * time.Second)
	return fmt.Errorf("%w: no poweroff within %v of the ACPI powerdown, so QEMU was stopped, as a power cut would (flushed writes are in the images, unflushed ones are lost)", ErrPowerdownTimeout, timeout)
}

// running is the QEMU running, or nil.
func (vm *VM) running() *instance {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.inst
}
