package hypervisor

import (
	"context"
	"fmt"

	"vhdkit/chains"
	"vhdkit/service"
)

// The verbs on a running guest. Each is a thin call over QMP (or the
// live chain), so a control socket maps `vhd ctl PATH vm VERB` onto them
// one to one.

// Status is what Status reports.
type Status struct {
	Name string `json:"name"`
	// State is QEMU's run state ("running", "paused", "inmigrate",
	// "shutdown"...), or "stopped" when no QEMU runs.
	State     string       `json:"state"`
	Accel     Accel        `json:"accel,omitempty"`
	AccelNote string       `json:"accel_note,omitempty"`
	PID       int          `json:"pid,omitempty"`
	Disks     []DiskStatus `json:"disks"`
}

// DiskStatus is one disk of a running guest.
type DiskStatus struct {
	Export   string   `json:"export"`
	Image    string   `json:"image"`
	ReadOnly bool     `json:"read_only"`
	Undo     bool     `json:"undo"`
	Layers   []string `json:"layers,omitempty"` // top first
}

// Status reports the guest's state and disks.
func (vm *VM) Status(ctx context.Context) (*Status, error) {
	vm.mu.Lock()
	inst, accel, note := vm.inst, vm.accel, vm.note
	vm.mu.Unlock()
	st := &Status{Name: vm.cfg.Name, State: "stopped"}
	for i, d := range vm.disks {
		ds := DiskStatus{Export: exportName(i), Image: d.Path, ReadOnly: d.ReadOnly, Undo: d.undo}
		if inst != nil && d.chain != nil {
			for _, l := range d.chain.Layers() {
				ds.Layers = append(ds.Layers, l.Path)
			}
		}
		st.Disks = append(st.Disks, ds)
	}
	if inst == nil {
		return st, nil
	}
	var qs struct {
		Status string `json:"status"`
	}
	if err := inst.qmp.Execute(ctx, "query-status", nil, &qs); err != nil {
		if errorsIsExit(err) {
			return st, nil // QEMU is ending (a poweroff, a reset under -no-reboot)
		}
		return nil, err
	}
	st.State, st.Accel, st.AccelNote, st.PID = qs.Status, accel, note, inst.cmd.Process.Pid
	return st, nil
}

// Pause stops the guest's CPUs; QEMU drains and flushes its disks first.
func (vm *VM) Pause(ctx context.Context) error { return vm.command(ctx, "stop") }

// Resume runs a paused guest again.
func (vm *VM) Resume(ctx context.Context) error { return vm.command(ctx, "cont") }

// Powerdown presses the guest's ACPI power button; the guest decides.
func (vm *VM) Powerdown(ctx context.Context) error { return vm.command(ctx, "system_powerdown") }

// Reset resets the guest at once, as the reset button does: what it
// had not flushed is lost, as on real hardware.
func (vm *VM) Reset(ctx context.Context) error { return vm.command(ctx, "system_reset") }

func (vm *VM) command(ctx context.Context, cmd string) error {
	inst := vm.running()
	if inst == nil {
		return fmt.Errorf("%s: %w", cmd, ErrNotRunning)
	}
	return inst.qmp.Execute(ctx, cmd, nil, nil)
}

// Host is the service host serving the guest's disks (NBD exports
// disk0, disk1... on the run's private socket), for a control socket to
// add exports to; nil when the guest is not running.
func (vm *VM) Host() *service.Host {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.host
}

// NBDSocket is the private socket the disks are served on (in a 0700
// folder of the run's); empty when the guest is not running.
func (vm *VM) NBDSocket() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.host == nil {
		return ""
	}
	return launch{dir: vm.dir}.nbdSocket()
}

// Chain is the live chain of disk i (attachment order) while the guest
// runs: Snapshot, View and Merge act on it while the guest writes.
func (vm *VM) Chain(i int) (*chains.Chain, error) {
	if i < 0 || i >= len(vm.disks) {
		return nil, fmt.Errorf("disk %d: the guest has %d disks", i, len(vm.disks))
	}
	if vm.running() == nil || vm.disks[i].chain == nil {
		return nil, fmt.Errorf("disk %d: %w", i, ErrNotRunning)
	}
	return vm.disks[i].chain, nil
}

// ExportLayer serves a read-only view of a frozen layer of disk i (one
// under its top: Chain.View) as the NBD export name on the run's socket,
// for a backup to read while the guest writes the top.
func (vm *VM) ExportLayer(ctx context.Context, i int, layer, name string) error {
	c, err := vm.Chain(i)
	if err != nil {
		return err
	}
	h := vm.Host()
	if h == nil {
		return ErrNotRunning
	}
	v, err := c.View(layer)
	if err != nil {
		return err
	}
	if _, err := h.AddExport(ctx, name, v, service.ExportOptions{Description: layer + " (read-only view)"}); err != nil {
		v.Close()
		return err
	}
	return nil
}

// Quit ends QEMU at once, as a power cut: what the guest had not
// flushed is lost; what it flushed is in the images, which Run flushes
// and closes as after any end.
func (vm *VM) Quit(ctx context.Context) error { return vm.command(ctx, "quit") }
