package hypervisor

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"vhdkit/chains"
)

// Accel is how QEMU runs the guest's CPU.
type Accel string

const (
	// AccelAuto uses KVM when /dev/kvm is usable and the guest shows
	// life on its console under it within Config.ProbeTimeout; else TCG,
	// saying why.
	AccelAuto Accel = "auto"
	// AccelKVM requires KVM, with the same probe: it fails clearly when
	// KVM does not work.
	AccelKVM Accel = "kvm"
	// AccelTCG is QEMU's emulator: slower, works everywhere.
	AccelTCG Accel = "tcg"
)

// Undo is what happens to the undo disks at the end of a run (Virtual
// Server's undo disks): every writable disk runs on an undo overlay
// (IMAGE.vud) and the image itself is not written during the run.
type Undo string

const (
	// UndoNone writes the disks themselves.
	UndoNone Undo = ""
	// UndoKeep leaves the undo disks for later ('vhd undo').
	UndoKeep Undo = "keep"
	// UndoCommit merges them into the disks after a clean poweroff.
	UndoCommit Undo = "commit"
	// UndoDiscard deletes them after a clean poweroff: the disks read as
	// before the run.
	UndoDiscard Undo = "discard"
)

// Disk is one disk of the guest, attached as a virtio-blk device in the
// order given (the first is /dev/vda in a Linux guest).
type Disk struct {
	// Path is the image: a VHD of any type; a differencing one is
	// opened with its chain of parents.
	Path string
	// ReadOnly attaches it read-only (the guest cannot write it).
	ReadOnly bool
}

// Defaults.
const (
	DefaultMemory           = 512 << 20
	DefaultCPUs             = 1
	DefaultProbeTimeout     = 5 * time.Second
	DefaultPowerdownTimeout = 60 * time.Second
	DefaultQEMU             = "qemu-system-x86_64"
)

// Config describes a guest and how to run it.
type Config struct {
	// Name names the guest (QEMU's -name, messages, the NBD exports'
	// descriptions); the first disk's file name if empty.
	Name  string
	Disks []Disk
	// Kernel, Initrd and Append boot a Linux kernel directly; without a
	// kernel the guest boots from its first disk (SeaBIOS).
	Kernel, Initrd, Append string
	// Memory in bytes (DefaultMemory if 0); CPUs (DefaultCPUs if 0).
	Memory int64
	CPUs   int
	Accel  Accel // AccelAuto if empty
	Undo   Undo
	// Console receives the guest's serial console (os.Stdout if nil);
	// ConsoleIn, if set, is typed into it.
	Console   io.Writer
	ConsoleIn io.Reader
	// QEMUArgs are appended to QEMU's command line as given.
	QEMUArgs []string
	// QEMU is the emulator binary (DefaultQEMU, found in PATH, if empty).
	QEMU string
	// Restore continues the guest saved in this state folder (Save)
	// instead of booting: disks, memory, CPUs, kernel and the machine
	// arguments come from its manifest, and Disks, Kernel, Initrd,
	// Append, Memory, CPUs and QEMUArgs must be left empty.
	Restore string
	// ProbeTimeout bounds how long the guest may stay silent on its
	// console under KVM before KVM is judged not to work
	// (DefaultProbeTimeout if 0).
	ProbeTimeout time.Duration
	// PowerdownTimeout is how long the guest has to power off after an
	// ACPI powerdown (the run's context ending) before QEMU is told to
	// quit (DefaultPowerdownTimeout if 0).
	PowerdownTimeout time.Duration
	// Control, if set, is where the run serves its control socket while
	// the guest runs (service's: HTTP and JSON, mode 0600, this user
	// only): `vhd ctl` verbs on the disks' exports, and the /v1/vm verbs
	// on the guest (control_socket.go).
	Control string
	// Chains opens the disks (parent folders, depth); ReadOnly is set
	// per disk.
	Chains chains.Options
	// Logger receives what the runner does and why (the accelerator it
	// chose, teardown); silent if nil.
	Logger *slog.Logger
}

// withDefaults fills in the defaults and checks the config.
func (c Config) withDefaults() (Config, error) {
	if c.Memory == 0 {
		c.Memory = DefaultMemory
	}
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	if c.Accel == "" {
		c.Accel = AccelAuto
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.PowerdownTimeout <= 0 {
		c.PowerdownTimeout = DefaultPowerdownTimeout
	}
	if c.QEMU == "" {
		c.QEMU = DefaultQEMU
	}
	if c.Console == nil {
		c.Console = os.Stdout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Name == "" && len(c.Disks) > 0 {
		c.Name = stem(c.Disks[0].Path)
	}
	if c.Name == "" {
		c.Name = "guest"
	}
	return c, c.validate()
}

func (c Config) validate() error {
	switch c.Accel {
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		return fmt.Errorf("accelerator %q: want auto, kvm or tcg", c.Accel)
	}
	switch c.Undo {
	case UndoNone, UndoKeep, UndoCommit, UndoDiscard:
	default:
		return fmt.Errorf("undo policy %q: want keep, commit or discard", c.Undo)
	}
	if c.Restore != "" {
		return nil // the manifest is checked when read (restore.go)
	}
	switch {
	case c.Memory < 16<<20 || c.Memory%(1<<20) != 0:
		return fmt.Errorf("memory %d bytes: give at least 16 MiB, in whole MiB", c.Memory)
	case c.CPUs < 1 || c.CPUs > 255:
		return fmt.Errorf("%d CPUs: give 1 to 255", c.CPUs)
	case c.Kernel == "" && (c.Initrd != "" || c.Append != ""):
		return errors.New("an initrd or kernel command line needs a kernel to boot ('vhd run --kernel K')")
	case c.Kernel == "" && len(c.Disks) == 0:
		return errors.New("nothing to boot: give a disk or a kernel ('vhd run --disk IMAGE' or 'vhd run --kernel K')")
	}
	return nil
}

// stem is a path's file name without its extension.
func stem(path string) string {
	base := filepath.Base(path)
	return base[:len(base)-len(filepath.Ext(base))]
}
