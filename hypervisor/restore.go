package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"vhdkit/chains"
	"vhdkit/engine"
)

// checkRestoreConfig refuses what a restore takes from the state.
func checkRestoreConfig(c Config) error {
	switch {
	case len(c.Disks) > 0:
		return errors.New("--restore takes the disks from the saved state: give no --disk")
	case c.Kernel != "" || c.Initrd != "" || c.Append != "":
		return errors.New("--restore takes the kernel from the saved state: give no --kernel, --initrd or --append")
	case c.Memory != 0 || c.CPUs != 0:
		return errors.New("--restore takes memory and CPUs from the saved state: give no --memory or --cpus")
	case len(c.QEMUArgs) > 0:
		return errors.New("--restore takes the QEMU arguments from the saved state: give no --qemu-arg")
	case c.Undo != UndoNone:
		return errors.New("--restore runs on new tops over the saved layers: --undo does not apply")
	}
	return nil
}

// prepareRestore reads the manifest: the machine and the disks.
func (vm *VM) prepareRestore() error {
	m, err := ReadManifest(vm.cfg.Restore)
	if err != nil {
		return err
	}
	vm.restore, vm.m = m, m.Machine
	if vm.cfg.Name == "guest" && m.Name != "" {
		vm.cfg.Name = m.Name
	}
	for _, sd := range m.Disks {
		vm.disks = append(vm.disks, &vmDisk{Disk: Disk{Path: sd.Image, ReadOnly: sd.ReadOnly}, open: sd.Layer})
	}
	return nil
}

// restoreTop is where a restore of the state writes disk i: a fresh top
// over the saved layer, inside the state folder.
func restoreTop(state string, i int, d SavedDisk) string {
	return filepath.Join(state, fmt.Sprintf("disk%d-%s.vhd", i, stem(d.Image)))
}

// openRestoreTops checks every saved layer is the one saved (its UUID)
// and gives each writable disk a fresh top to run on. A top an earlier
// restore left empty is taken over; one it wrote to is refused: the
// guest's memory would not match it.
func (vm *VM) openRestoreTops() error {
	for i, sd := range vm.restore.Disks {
		if err := checkLayer(sd); err != nil {
			return err
		}
		if sd.ReadOnly {
			continue
		}
		top := restoreTop(vm.cfg.Restore, i, sd)
		if err := makeRestoreTop(sd, top, vm.cfg.Chains); err != nil {
			return err
		}
		vm.disks[i].open = top
	}
	return nil
}

// checkLayer makes sure the saved layer is still the image saved.
func checkLayer(sd SavedDisk) error {
	img, err := engine.Open(sd.Layer, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		return fmt.Errorf("%w: the saved layer of %s: %v", ErrBadState, sd.Image, err)
	}
	defer img.Close()
	if got := img.Footer().UUID.String(); got != sd.UUID {
		return fmt.Errorf("%w: %s is no longer the layer saved (UUID %s, the state recorded %s)", ErrBadState, sd.Layer, got, sd.UUID)
	}
	return nil
}

// makeRestoreTop creates top, an empty child of the saved layer, whole
// under a temporary name, then renames it into place and syncs the
// folder; or takes over an empty one an earlier restore left.
func makeRestoreTop(sd SavedDisk, top string, opts chains.Options) error {
	if _, err := os.Lstat(top); err == nil {
		return adoptRestoreTop(sd, top)
	}
	tmp := top + ".creating"
	os.Remove(tmp) // left by a crash: it never had its name
	c, err := chains.CreateChild(sd.Layer, tmp, chains.CreateOptions{Open: opts})
	if err != nil {
		return fmt.Errorf("make a top for the restored guest over %s: %w", sd.Layer, err)
	}
	if err := c.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, top); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncPath(filepath.Dir(top))
}

func adoptRestoreTop(sd SavedDisk, top string) error {
	img, err := engine.Open(top, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		return fmt.Errorf("%s: %w", top, err)
	}
	defer img.Close()
	if img.Type() != engine.TypeDifferencing || img.Header().ParentUUID.String() != sd.UUID {
		return fmt.Errorf("%s exists and is not a top over the saved layer %s: move it away to restore", top, sd.Layer)
	}
	if img.AllocatedBytes() != 0 {
		return fmt.Errorf("%s holds what an earlier restore of this state wrote, which the saved memory knows nothing of: keep it by running it as a disk of its own ('vhd run --disk %s', a reboot) or delete it to restore the saved moment again", top, top)
	}
	return nil
}

// bootRestore starts QEMU waiting for the saved state, loads it and lets
// the guest run on from the saved moment.
func (vm *VM) bootRestore(ctx context.Context, l launch) error {
	accel := vm.restore.Accel
	if vm.cfg.Accel != AccelAuto {
		accel = vm.cfg.Accel
	}
	if accel == AccelKVM {
		if err := vm.kvmCheck(); err != nil {
			return fmt.Errorf("%w: %v", ErrKVM, err)
		}
	}
	l.accel, l.incoming = accel, true
	inst, err := vm.startQEMU(ctx, l)
	if err != nil {
		return err
	}
	if err := vm.loadState(ctx, inst); err != nil {
		inst.kill()
		return err
	}
	vm.setRunning(inst, accel, "restored from "+vm.cfg.Restore)
	return nil
}

// loadState feeds the memory file to QEMU, waits for the load to end
// and runs the guest: QEMU starts it itself when it was running at the
// save, and leaves it paused when it was paused then; a restore is
// there to go on, so it is resumed either way.
func (vm *VM) loadState(ctx context.Context, inst *instance) error {
	if v := inst.qmp.Greeting().Version.QEMU; fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) != vm.restore.QEMU {
		vm.log.Warn("the state was saved by another QEMU version: its memory may not load", "saved_by", vm.restore.QEMU)
	}
	uri := "exec:cat " + shellQuote(filepath.Join(vm.cfg.Restore, memoryFile))
	if err := inst.qmp.Execute(ctx, "migrate-incoming", map[string]string{"uri": uri}, nil); err != nil {
		return fmt.Errorf("%w: %v", ErrBadState, err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var st struct {
			Status string `json:"status"`
		}
		if err := inst.qmp.Execute(ctx, "query-status", nil, &st); err != nil {
			return fmt.Errorf("%w: loading the memory: %v", ErrBadState, inst.exitError())
		}
		switch st.Status {
		case "running":
			return nil
		case "paused", "postmigrate":
			return inst.qmp.Execute(ctx, "cont", nil, nil)
		}
		select {
		case <-tick.C:
		case <-inst.exited:
			return fmt.Errorf("%w: loading the memory: %v", ErrBadState, inst.exitError())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
