package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"vhdkit/hypervisor"
	"vhdkit/service"
)

var runCmd = &command{
	name:    "run",
	args:    "[--disk IMAGE[:ro]]... [--kernel K [--initrd I] [--append A]] [--memory SIZE] [--cpus N] [--accel auto|kvm|tcg] [--console FILE] [--undo keep|commit|discard] [--name NAME] [--control PATH] [--qemu-arg ARG]... [--dry-run] | --restore STATE [--control PATH]",
	summary: "run a guest (QEMU) on VHD disks served by vhd itself",
	doc: `Runs a guest under QEMU (qemu-system-x86_64) with each --disk attached as
a virtio-blk disk, in the order given (/dev/vda, /dev/vdb... in Linux):
the disks are served by this process over NBD on a private socket, as
'vhd serve' serves them, so a differencing IMAGE runs with its chain,
and a guest's flush (fsync) is durable in the image before the guest
goes on. IMAGE:ro attaches a disk read-only. With --kernel the guest
boots that Linux kernel (with --initrd and --append); without, it boots
from its first disk. The guest's serial console goes to standard output
(or --console FILE, appended to); standard input is typed into it.
The guest has no display and no network unless --qemu-arg adds them.

vhd run exits with status 0 when the guest powers off. SIGINT or SIGTERM
presses the guest's ACPI power button; if the guest has not powered off
within --powerdown-timeout, QEMU is stopped, as a power cut would (the
exit status is then 1). A second signal stops QEMU at once. However the
guest ends, the disks are flushed and closed before vhd run exits.

--accel auto (the default) uses KVM when /dev/kvm works and the guest
prints on its serial console under KVM within a few seconds; otherwise
it says why and runs the guest under TCG (emulation: slower, works
everywhere). Nested KVM can hang a guest before it prints anything,
which is why the guest is watched. --accel kvm fails instead of falling
back; --accel tcg does not try KVM. A guest that prints nothing on its
serial console (add console=ttyS0 to a Linux kernel's command line)
cannot be judged: use --accel tcg, or kvm where KVM is known to work.

--undo keep|commit|discard runs every writable disk on its undo disk
(IMAGE.vud, see 'vhd undo'), so the image is not written during the
run; after the guest powers off, commit merges the undo disk into the
image, discard deletes it (the image is as before the run), keep leaves
it. If the run ends without a clean poweroff the undo disks are kept,
whatever the policy.

A control socket (--control PATH, default $XDG_RUNTIME_DIR/vhdkit/
run-PID.ctl, or /run/vhdkit/run-PID.ctl as root, else vhd's private
folder) lets 'vhd ctl' act on the running guest: every verb of vhd
serve's control socket on its disks (exports disk0, disk1...: snapshot,
merge, undo, and the read-only view of a frozen layer a backup reads,
'vhd ctl PATH add NAME --view-of disk0', served on the run's NBD
socket), and 'vhd ctl PATH vm status|pause|resume|powerdown|reset|save
STATE' on the guest (see 'vhd help ctl'). Its path is printed
as control:PATH once the guest runs: on standard output with --console
FILE, else on standard error (standard output is then the console).
Only the user who started vhd run may use it.

Every guest gets a virtio-serial port named org.qemu.guest_agent.0 for
qemu-guest-agent. When the agent answers, a backup through the control
socket freezes the guest's filesystems while it cuts its point, and
thaws them after; without an agent the point is crash-consistent.

--restore STATE continues a guest saved (memory and disks, one paused
moment) into the folder STATE, with no reboot: disks, memory, CPUs and
kernel come from the state, and the guest writes to new tops over the
saved layers, inside STATE. 'vhd ctl PATH vm save STATE' saves one.

--dry-run prints the QEMU command line and exits; --qemu-arg (repeatable)
appends an argument to it, e.g. --qemu-arg=-nic --qemu-arg=user.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		o := &runOptions{}
		fs.StringArrayVar(&o.disks, "disk", nil, "attach this image (IMAGE:ro read-only; repeatable, in order)")
		fs.StringVar(&o.cfg.Kernel, "kernel", "", "boot this Linux kernel instead of the first disk")
		fs.StringVar(&o.cfg.Initrd, "initrd", "", "the kernel's initramfs")
		fs.StringVar(&o.cfg.Append, "append", "", "the kernel's command line (add console=ttyS0 to see it on the console)")
		fs.StringVar(&o.memory, "memory", "512M", "the guest's memory")
		fs.IntVar(&o.cfg.CPUs, "cpus", hypervisor.DefaultCPUs, "the guest's CPUs")
		fs.StringVar(&o.accel, "accel", string(hypervisor.AccelAuto), "auto, kvm or tcg")
		fs.StringVar(&o.console, "console", "", "write the serial console to this file (appended) instead of standard output")
		fs.StringVar(&o.undo, "undo", "", "run on undo disks and keep, commit or discard them at the end")
		fs.StringVar(&o.cfg.Name, "name", "", "the guest's name (default: the first disk's file name)")
		fs.StringArrayVar(&o.cfg.QEMUArgs, "qemu-arg", nil, "append this argument to QEMU's command line (repeatable)")
		fs.StringVar(&o.cfg.Restore, "restore", "", "continue the guest saved in this state folder")
		fs.BoolVar(&o.dryRun, "dry-run", false, "print the QEMU command line and exit")
		fs.StringVar(&o.cfg.Control, "control", "", "control socket for 'vhd ctl' (default: $XDG_RUNTIME_DIR/vhdkit/run-PID.ctl)")
		fs.DurationVar(&o.cfg.PowerdownTimeout, "powerdown-timeout", hypervisor.DefaultPowerdownTimeout, "after SIGINT/SIGTERM, how long the guest has to power off before QEMU is stopped")
		cf := addChainFlags(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usageErr("unexpected argument %q (disks are given with --disk)", args[0])
			}
			if err := o.parse(fs); err != nil {
				return err
			}
			o.cfg.Chains = cf.options(false)
			return runGuest(ctx, e, o)
		}
	},
}

// runOptions are the parsed command line of vhd run.
type runOptions struct {
	cfg                          hypervisor.Config
	disks                        []string
	memory, accel, undo, console string
	dryRun                       bool
}

// parse turns the flags into the runner's config.
func (o *runOptions) parse(fs *pflag.FlagSet) error {
	for _, d := range o.disks {
		path, ro := strings.CutSuffix(d, ":ro")
		if path == "" {
			return usageErr("--disk %q: no image", d)
		}
		o.cfg.Disks = append(o.cfg.Disks, hypervisor.Disk{Path: path, ReadOnly: ro})
	}
	o.cfg.Accel, o.cfg.Undo = hypervisor.Accel(o.accel), hypervisor.Undo(o.undo)
	if o.cfg.Restore != "" {
		// The state says these; a flag given anyway is refused (New).
		if !fs.Changed("memory") {
			o.memory = ""
		}
		if !fs.Changed("cpus") {
			o.cfg.CPUs = 0
		}
	}
	if o.memory != "" {
		n, err := parseSize(o.memory)
		if err != nil {
			return usageErr("--memory: %v", err)
		}
		o.cfg.Memory = n
	}
	return nil
}

// runGuest runs the guest (or prints its command line) and reports.
func runGuest(ctx context.Context, e *env, o *runOptions) error {
	o.cfg.Logger = newUserLog(e.stderr, "run", slog.LevelWarn)
	o.cfg.Console, o.cfg.ConsoleIn = e.stdout, os.Stdin
	if o.console != "" {
		f, err := os.OpenFile(o.console, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("--console: %w", err)
		}
		defer f.Close()
		o.cfg.Console = f
	}
	if !o.dryRun {
		if err := controlPath(&o.cfg); err != nil {
			return err
		}
	}
	vm, err := hypervisor.New(o.cfg)
	if err != nil {
		if errors.Is(err, hypervisor.ErrBadState) {
			return err
		}
		return usageErr("%v", err)
	}
	if o.dryRun {
		return printDryRun(e.stdout, vm)
	}
	defer service.OnSecondSignal(func() {
		fmt.Fprintln(e.stderr, "vhd run: second signal: stopping QEMU now")
		qctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		vm.Quit(qctx)
	})()
	// The control line goes where the console does not.
	controlOut := e.stderr
	if o.console != "" {
		controlOut = e.stdout
	}
	go announce(ctx, e.stderr, controlOut, o.cfg.Control, vm)
	return vm.Run(ctx)
}

// controlPath sets the control socket's path: the one given, made
// absolute, else the default.
func controlPath(cfg *hypervisor.Config) error {
	if cfg.Control != "" {
		abs, err := filepath.Abs(cfg.Control)
		if err != nil {
			return fmt.Errorf("--control: %w", err)
		}
		cfg.Control = abs
		return nil
	}
	p, err := service.DefaultRunControlSocket()
	if err != nil {
		return fmt.Errorf("%w (or put the control socket elsewhere with --control PATH)", err)
	}
	cfg.Control = p
	return nil
}

// printDryRun prints the line Run would start first and what may follow.
func printDryRun(w io.Writer, vm *hypervisor.VM) error {
	accel, why := vm.FirstAccel()
	if why != "" {
		fmt.Fprintf(w, "# %s: %s\n", accel, why)
	}
	if accel == hypervisor.AccelKVM {
		fmt.Fprintf(w, "# if the guest shows no life under KVM, --accel auto runs the same line with -accel tcg\n")
	}
	fmt.Fprintln(w, vm.CommandLine(accel))
	return nil
}

// announce says on stderr, once the guest runs, what runs it and how to
// stop it, and prints control:PATH on controlOut.
func announce(ctx context.Context, w, controlOut io.Writer, control string, vm *hypervisor.VM) {
	select {
	case <-vm.Started():
	case <-ctx.Done():
		return
	}
	st, err := vm.Status(ctx)
	if err != nil || st.State == "stopped" {
		return
	}
	fmt.Fprintf(w, "vhd run: guest %s running under %s (QEMU pid %d); SIGINT/SIGTERM powers it down\n", st.Name, st.Accel, st.PID)
	fmt.Fprintf(controlOut, "control:%s\n", control)
}
