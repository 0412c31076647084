package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"vhdkit/nbdserve"
	"vhdkit/vhdfs"
)

// fuseMount is one export's FUSE mount in vhd serve --fuse.
type fuseMount struct {
	dir string
	srv *vhdfs.Server
}

// mountExports mounts every export's disk: at o.fuse for a single one, at
// o.fuse/NAME for several. The disks are the ones NBD serves, so both
// views share every write at once.
func mountExports(ctx context.Context, srv *nbdserve.Server, o *serveOptions, log *slog.Logger) ([]fuseMount, error) {
	var names []string
	for name := range srv.Exports {
		names = append(names, name)
	}
	sort.Strings(names)
	var mounts []fuseMount
	for _, name := range names {
		dir := o.fuse
		if len(names) > 1 {
			dir = filepath.Join(o.fuse, name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return mounts, err
			}
		}
		ex := srv.Exports[name]
		m, err := vhdfs.Mount(ctx, ex.Disk, dir, vhdfs.Options{ReadOnly: o.readOnly, FsName: ex.Description, Logger: log,
			Info: map[string]any{"export": name, "image": ex.Description, "served_over": "nbd and fuse"}})
		if err != nil {
			return mounts, fmt.Errorf("mount %s at %s: %w", name, dir, err)
		}
		mounts = append(mounts, fuseMount{dir: dir, srv: m})
	}
	return mounts, nil
}

// unmountAll unmounts, detaching lazily a mount still in use, and waits
// for each server to finish (it flushes the disk).
func unmountAll(mounts []fuseMount, log *slog.Logger) {
	for _, m := range mounts {
		if err := m.srv.Unmount(); err != nil {
			log.Warn("unmount busy; detaching lazily", "dir", m.dir, "err", err)
			syscall.Unmount(m.dir, syscall.MNT_DETACH)
		}
		if err := m.srv.Wait(); err != nil {
			log.Warn("fuse server", "dir", m.dir, "err", err)
		}
	}
}
