package hypervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// A saved state is a folder:
//
//	STATE/
//	  manifest.json   what to restore: the machine, the disks' frozen
//	                  layers, the QEMU version and accelerator
//	  memory          the guest's memory and device state: QEMU's
//	                  migration stream (migrate to exec:cat)
//	  DISK.vhd...     made by each restore: a fresh top over each frozen
//	                  layer, where the restored guest writes
//
// The frozen layers (the tops at the saved moment, cut by a live
// snapshot) stay where they were and are never written again: they have
// children (guard.go). The folder is written under a temporary name and
// renamed into place after everything in it is synced, so a STATE
// folder that exists is whole.

// StateFormat names the manifest's format and version.
const StateFormat = "vhdkit-saved-guest/1"

const (
	manifestFile  = "manifest.json"
	memoryFile    = "memory"
	maxManifest   = 1 << 20
	stateDirMode  = 0o700
	stateTempMark = ".saving-"
)

// Manifest describes a saved guest.
type Manifest struct {
	Format string    `json:"format"`
	Name   string    `json:"name"`
	Saved  time.Time `json:"saved"`
	// QEMU is the version that saved the state (major.minor.micro): a
	// different one may refuse the memory stream.
	QEMU    string      `json:"qemu_version"`
	Accel   Accel       `json:"accel"`
	Machine machine     `json:"machine"`
	Disks   []SavedDisk `json:"disks"`
}

// SavedDisk is one disk of a saved guest, in attachment order.
type SavedDisk struct {
	// Image is the disk as the run was given it.
	Image string `json:"image"`
	// Layer is the image that holds the disk at the saved moment: the
	// frozen layer for a writable disk, the image itself for a
	// read-only one. UUID is its footer's UUID, to know it again.
	Layer    string `json:"layer"`
	UUID     string `json:"uuid"`
	ReadOnly bool   `json:"read_only"`
	// ContinuedOn is the new top the saving run went on writing to.
	ContinuedOn string `json:"continued_on,omitempty"`
}

// ReadManifest reads and checks STATE/manifest.json.
func ReadManifest(state string) (*Manifest, error) {
	f, err := os.Open(filepath.Join(state, manifestFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrBadState, f.Name(), err)
	}
	if len(b) > maxManifest {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes: not a manifest vhd wrote", ErrBadState, f.Name(), maxManifest)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadState, f.Name(), err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadState, f.Name(), err)
	}
	return &m, nil
}

func (m *Manifest) check() error {
	switch {
	case m.Format != StateFormat:
		return fmt.Errorf("format %q, want %q", m.Format, StateFormat)
	case m.Accel != AccelKVM && m.Accel != AccelTCG:
		return fmt.Errorf("accelerator %q", m.Accel)
	case m.Machine.Type == "" || m.Machine.Memory < 16<<20 || m.Machine.CPUs < 1 || m.Machine.CPUs > 255:
		return errors.New("the machine (type, memory, CPUs) is missing or out of range")
	case len(m.Disks) > maxDisks:
		return fmt.Errorf("%d disks: at most %d", len(m.Disks), maxDisks)
	}
	for i, d := range m.Disks {
		if d.Layer == "" || !filepath.IsAbs(d.Layer) || d.UUID == "" {
			return fmt.Errorf("disk %d: its layer is missing or not an absolute path", i)
		}
	}
	return nil
}

// maxDisks bounds the disks of one guest (PCI slots).
const maxDisks = 24

// writeState writes the manifest into the temporary folder tmp, syncs
// the memory file and the manifest, renames tmp to state and syncs the
// parent folder: after this returns, STATE exists whole, and before, a
// crash leaves at most a STATE.saving-* folder no restore reads.
func writeState(tmp, state string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(tmp, manifestFile), append(b, '\n')); err != nil {
		return err
	}
	if err := syncPath(filepath.Join(tmp, memoryFile)); err != nil {
		return err
	}
	if err := syncPath(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, state); err != nil {
		return fmt.Errorf("put the saved state in place: %w", err)
	}
	return syncPath(filepath.Dir(state))
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncPath fsyncs a file or folder.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
