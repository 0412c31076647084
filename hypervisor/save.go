package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"vhdkit/hypervisor/qmp"
)

// Save checkpoints the running guest into the folder state: memory and
// disks of one paused moment, so that `vhd run --restore STATE` goes on
// from it with no reboot, and the guest's databases see no power loss
// (a disk snapshot alone would look like one). The guest runs on
// afterwards (if it was running), writing to new tops; one paused before
// stays paused (QEMU calls it postmigrate) until Resume.
//
// In one paused moment, in this order:
//
//  1. stop: QEMU pauses the CPUs, then drains its disks' requests and
//     flushes them (vm_stop), so every write the guest issued has
//     reached the server and is durable there;
//  2. each writable disk is flushed again and a live snapshot cuts a new
//     top (Chain.Snapshot): the old top, now frozen, is the disk at this
//     moment, and is never written again (it has a child);
//  3. QEMU's migration stream (memory and device state) is written to
//     STATE's memory file, while still paused, so it matches the frozen
//     layers;
//  4. the manifest is written, everything synced and the folder renamed
//     into place (writeState); then the guest continues.
//
// If a step fails the guest continues all the same and no STATE folder
// exists; a snapshot already cut stays (a harmless extra layer).
// Disks on undo disks cannot be saved: an undo disk is committed or
// discarded, not snapshotted.
func (vm *VM) Save(ctx context.Context, state string) (*Manifest, error) {
	vm.saveMu.Lock()
	defer vm.saveMu.Unlock()
	inst := vm.running()
	if inst == nil {
		return nil, fmt.Errorf("save: %w", ErrNotRunning)
	}
	state, err := filepath.Abs(state)
	if err != nil {
		return nil, err
	}
	if err := vm.canSave(state); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(state), filepath.Base(state)+stateTempMark)
	if err != nil {
		return nil, fmt.Errorf("save: %w", err)
	}
	m, err := vm.savePaused(ctx, inst, state, tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("save %s: %w", state, err)
	}
	return m, nil
}

// canSave refuses a save that cannot work, before pausing anything.
func (vm *VM) canSave(state string) error {
	if _, err := os.Lstat(state); err == nil {
		return fmt.Errorf("save: %s exists: choose another name for the state (%w)", state, fs.ErrExist)
	}
	for _, d := range vm.disks {
		if d.undo {
			return fmt.Errorf("save: %s runs on an undo disk, which cannot be snapshotted: save guests run without --undo (%w)", d.Path, ErrCannotSave)
		}
		if d.ReadOnly {
			continue
		}
		if _, err := os.Lstat(continuedTop(d, state)); err == nil {
			return fmt.Errorf("save: %s exists: choose another name for the state (%w)", continuedTop(d, state), fs.ErrExist)
		}
	}
	return nil
}

// continuedTop is where the saving run goes on writing disk d: beside
// its top, named after the disk and the state.
func continuedTop(d *vmDisk, state string) string {
	top := d.chain.Layers()[0].Path
	return filepath.Join(filepath.Dir(top), stem(d.Path)+"-"+filepath.Base(state)+".vhd")
}

// savePaused pauses the guest, cuts the snapshots, writes memory and
// manifest, and resumes the guest if it was running.
func (vm *VM) savePaused(ctx context.Context, inst *instance, state, tmp string) (*Manifest, error) {
	var st struct {
		Status string `json:"status"`
	}
	if err := inst.qmp.Execute(ctx, "query-status", nil, &st); err != nil {
		return nil, err
	}
	if err := inst.qmp.Execute(ctx, "stop", nil, nil); err != nil {
		return nil, err
	}
	if st.Status == "running" {
		defer func() {
			// The guest continues even if the save failed.
			if err := inst.qmp.Execute(context.WithoutCancel(ctx), "cont", nil, nil); err != nil {
				vm.log.Error("the guest could not be resumed after the save", "err", err)
			}
		}()
	}
	m, err := vm.manifest(ctx, inst)
	if err != nil {
		return nil, err
	}
	if m.Disks, err = vm.snapshotDisks(state); err != nil {
		return nil, err
	}
	if err := migrateTo(ctx, inst.qmp, filepath.Join(tmp, memoryFile)); err != nil {
		return nil, err
	}
	return m, writeState(tmp, state, m)
}

// manifest describes the machine as it runs, with the machine type
// pinned to the version QEMU resolved it to.
func (vm *VM) manifest(ctx context.Context, inst *instance) (*Manifest, error) {
	var qomType string
	if err := inst.qmp.Execute(ctx, "qom-get", map[string]string{"path": "/machine", "property": "type"}, &qomType); err != nil {
		return nil, err
	}
	mach := vm.m
	mach.Type = strings.TrimSuffix(qomType, "-machine")
	v := inst.qmp.Greeting().Version.QEMU
	vm.mu.Lock()
	accel := vm.accel
	vm.mu.Unlock()
	return &Manifest{Format: StateFormat, Name: vm.cfg.Name, Saved: time.Now().UTC(),
		QEMU: fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro), Accel: accel, Machine: mach}, nil
}

// snapshotDisks records every disk at the paused moment: a writable
// one's top is flushed and frozen under a new top (a live snapshot); a
// read-only one is recorded as it is.
func (vm *VM) snapshotDisks(state string) ([]SavedDisk, error) {
	var out []SavedDisk
	for _, d := range vm.disks {
		top := d.chain.Layers()[0]
		sd := SavedDisk{Image: d.Path, Layer: top.Path, UUID: top.Image.Footer().UUID.String(), ReadOnly: d.ReadOnly}
		if !d.ReadOnly {
			sd.ContinuedOn = continuedTop(d, state)
			if err := d.chain.Flush(); err != nil {
				return nil, err
			}
			if err := d.chain.Snapshot(sd.ContinuedOn); err != nil {
				return nil, err
			}
			vm.log.Info("disk frozen for the saved state", "layer", sd.Layer, "continues_on", sd.ContinuedOn)
		}
		abs, err := filepath.Abs(sd.Layer)
		if err != nil {
			return nil, err
		}
		sd.Layer = abs
		out = append(out, sd)
	}
	return out, nil
}

// migrateTo writes QEMU's migration stream to path and waits for it to
// complete. QEMU 7.2 has no file: migration, so a shell's cat writes it.
func migrateTo(ctx context.Context, c *qmp.Client, path string) error {
	uri := "exec:cat > " + shellQuote(path)
	if err := c.Execute(ctx, "migrate", map[string]string{"uri": uri}, nil); err != nil {
		return err
	}
	return waitMigration(ctx, c)
}

// waitMigration polls query-migrate until the migration completes or
// fails.
func waitMigration(ctx context.Context, c *qmp.Client) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var q struct {
			Status string `json:"status"`
			Error  string `json:"error-desc"`
		}
		if err := c.Execute(ctx, "query-migrate", nil, &q); err != nil {
			return err
		}
		switch q.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("saving the memory failed: %s %s", q.Status, q.Error)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			c.Execute(context.WithoutCancel(ctx), "migrate_cancel", nil, nil)
			return errors.Join(ctx.Err(), errors.New("the memory save was cancelled"))
		}
	}
}
