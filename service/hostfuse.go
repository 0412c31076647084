package service

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"vhdkit/vhdfs"
)

// FUSEOptions say how an export is mounted over FUSE.
type FUSEOptions struct {
	// Dir is the mount point.
	Dir string
	// MakeDir creates Dir, and the folders above it that are missing.
	// What it made is removed at teardown once unmounted (if still
	// empty): a mount point the host made is not left behind.
	MakeDir bool
	// Mount are the FUSE mount's own options (read-only, who may read
	// and write, info.json, logging).
	Mount vhdfs.Options
	// Filesystems also mounts the filesystems inside the disk's
	// partitions under Dir/fs, through loop devices (root only): see
	// filesystems.go. A partition that cannot be mounted is reported in
	// Export.Filesystems, not an error.
	Filesystems bool
	// DetachBusy: at teardown, a mount still in use (files open in it)
	// is detached lazily (it goes once they are closed) instead of
	// retried for a while and then waited for.
	DetachBusy bool
}

// fuseMount is an export's FUSE mount.
type fuseMount struct {
	dir        string
	srv        *vhdfs.Server
	made       []string // folders MakeDir created, deepest first
	detachBusy bool
}

// mountFUSE mounts ex's disk as o says, and its filesystems. On error
// nothing of it is left mounted or made.
func (h *Host) mountFUSE(ctx context.Context, ex *Export, o FUSEOptions) error {
	var made []string
	if o.MakeDir {
		var err error
		if made, err = makeDirs(o.Dir); err != nil {
			return err
		}
	}
	mo := o.Mount
	mo.FSDirs = mo.FSDirs || o.Filesystems
	if mo.Logger == nil {
		mo.Logger = h.log
	}
	srv, err := vhdfs.Mount(ctx, ex.Disk, o.Dir, mo)
	if err != nil {
		removeDirs(made)
		return err
	}
	ex.fuse = &fuseMount{dir: o.Dir, srv: srv, made: made, detachBusy: o.DetachBusy}
	ex.Mountpoint = o.Dir
	if o.Filesystems {
		ex.Filesystems = mountFilesystems(ctx, o.Dir, srv.Table(), mo.ReadOnly, h.log)
	}
	go h.watchUnmount(srv)
	return nil
}

// watchUnmount ends Run, with StopOnUnmount, once the mount is gone.
func (h *Host) watchUnmount(srv *vhdfs.Server) {
	<-srv.Done()
	if h.stopOnUnmount {
		h.unmountedOnce.Do(func() { close(h.unmounted) })
	}
}

// unmountFUSE takes ex's filesystems and FUSE mount down, unless the
// mount went away from outside (vhd umount, which took the filesystems
// down first), and waits for the FUSE server, which flushes the disk.
func (h *Host) unmountFUSE(ex *Export) error {
	m := ex.fuse
	if m == nil {
		return nil
	}
	select {
	case <-m.srv.Done():
	default:
		if err := teardownFilesystems(ex.Filesystems, false, h.log); err != nil {
			h.log.Error("vhd: unmounting the filesystems", "err", err)
		}
		if err := m.srv.Unmount(); err != nil {
			h.unmountBusy(m, err)
		}
	}
	if err := m.srv.Wait(); err != nil {
		return fmt.Errorf("flushing %s: %w", ex.label(), err)
	}
	return nil
}

// unmountBusy deals with a mount that refused to go (files open in it,
// a loop device still letting go): detach it lazily, or retry for a
// while (unmountPoint) and then leave it for the user to unmount, as the
// FUSE server's Wait does.
func (h *Host) unmountBusy(m *fuseMount, err error) {
	if m.detachBusy {
		h.log.Warn("vhd: unmount busy; detaching lazily", "dir", m.dir, "err", err)
		err = unmountPoint(m.dir, true)
	} else {
		err = unmountPoint(m.dir, false)
	}
	if err != nil {
		h.log.Error("vhd: unmount", "dir", m.dir, "err", err)
	}
}

// makeDirs is os.MkdirAll that returns the folders it made, deepest
// first.
func makeDirs(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || !errors.Is(err, fs.ErrNotExist) || d == filepath.Dir(d) {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return missing, nil
}

// removeDirs removes folders made for mount points, deepest first; one
// that is not empty (someone put something there) stays.
func removeDirs(dirs []string) {
	for _, d := range dirs {
		os.Remove(d)
	}
}

func removeMadeDirs(m *fuseMount) {
	if m != nil {
		removeDirs(m.made)
	}
}

func removeFiles(paths []string) {
	for _, p := range paths {
		os.Remove(p)
	}
}
