package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"vhdkit/vhdfs"
)

// `vhd mount --fs`: each partition file (or disk, without a table) goes
// on a loop device, blkid names its filesystem, and the kernel (ext2/3/4,
// xfs, btrfs) or ntfs-3g mounts it on MOUNTPOINT/fs/NAME. Teardown runs
// the other way: filesystems, loop devices, then (the caller) the FUSE
// mount, whose server flushes the disk as it exits.

// FSMount is one filesystem mounted from a partition of a served disk
// (vhd mount --fs), with its loop device.
type FSMount struct {
	Part    string `json:"part"` // p1, ... or disk
	Loop    string `json:"loop,omitempty"`
	Type    string `json:"type,omitempty"`
	Dir     string `json:"dir,omitempty"`
	Mounted bool   `json:"mounted"`
	Note    string `json:"note,omitempty"` // why it is not mounted
}

// kernelFS are the filesystems this machine's kernel mounts from a loop
// device; ntfs goes through ntfs-3g. Anything else is reported.
var kernelFS = map[string]bool{"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true}

// mountFilesystems mounts what it can and reports the rest. It never
// fails as a whole: a partition that cannot be mounted says why.
func mountFilesystems(ctx context.Context, mnt string, t *vhdfs.Table, readOnly bool, log *slog.Logger) []FSMount {
	names := []string{"disk"}
	if len(t.Partitions) > 0 {
		names = names[:0]
		for _, p := range t.Partitions {
			names = append(names, fmt.Sprintf("p%d", p.Number))
		}
	}
	var list []FSMount
	for _, name := range names {
		m := FSMount{Part: name, Dir: filepath.Join(mnt, "fs", name)}
		mountOne(ctx, &m, filepath.Join(mnt, name), readOnly)
		if !m.Mounted {
			log.Info("vhd mount: a filesystem is not mounted", "part", name, "why", m.Note)
			m.Dir = ""
		}
		list = append(list, m)
	}
	return list
}

func mountOne(ctx context.Context, m *FSMount, file string, readOnly bool) {
	args := []string{"-f", "--show"}
	if readOnly {
		args = append(args, "-r")
	}
	out, err := runTool(ctx, "losetup", append(args, file)...)
	if err != nil {
		m.Note = err.Error()
		return
	}
	m.Loop = strings.TrimSpace(out)
	typ, err := runTool(ctx, "blkid", "-p", "-o", "value", "-s", "TYPE", m.Loop)
	m.Type = strings.TrimSpace(typ)
	switch {
	case err != nil && m.Type == "":
		m.Note = "no filesystem found"
	case kernelFS[m.Type]:
		opts := []string{"-t", m.Type}
		if readOnly {
			opts = append(opts, "-o", "ro")
		}
		_, err = runTool(ctx, "mount", append(opts, m.Loop, m.Dir)...)
	case m.Type == "ntfs":
		var opts []string
		if readOnly {
			opts = append(opts, "-o", "ro")
		}
		_, err = runTool(ctx, "ntfs-3g", append(opts, m.Loop, m.Dir)...)
	default:
		m.Note = fmt.Sprintf("%s: this machine cannot mount it (no driver); the partition file is still there", m.Type)
	}
	if m.Note == "" && err != nil {
		m.Note = err.Error()
	}
	if m.Note != "" {
		detachLoop(m.Loop)
		m.Loop = ""
		return
	}
	m.Mounted = true
}

// teardownFilesystems unmounts the filesystems and detaches their loop
// devices, last first. lazy detaches what cannot be unmounted cleanly (a
// dead server: the filesystem cannot flush to it anyway).
func teardownFilesystems(list []FSMount, lazy bool, log *slog.Logger) error {
	var errs []error
	for i := len(list) - 1; i >= 0; i-- {
		m := list[i]
		if m.Mounted && IsMounted(m.Dir) {
			// umount(2) of an ext4, xfs or btrfs writes everything back
			// through the loop device and flushes it; for ntfs-3g
			// (fuseblk) it waits for ntfs-3g to finish.
			if err := unmountRetry(m.Dir, lazy); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", m.Dir, err))
				continue
			}
		}
		if m.Loop != "" {
			if err := detachLoop(m.Loop); err != nil {
				log.Warn("vhd: detaching loop device", "loop", m.Loop, "err", err)
			}
		}
	}
	return errors.Join(errs...)
}

// unmountRetry unmounts dir, retrying while it is busy for a few seconds
// (a loop device lets go of its file asynchronously). lazy: MNT_DETACH.
func unmountRetry(dir string, lazy bool) error {
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	var err error
	for range 100 {
		err = unix.Unmount(dir, flags)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // done, or not a mount point
		}
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// unmountPoint unmounts a vhd FUSE mount: umount(2) as root, fusermount3
// otherwise. lazy detaches a dead mount (ENOTCONN) that a plain unmount
// may refuse while something still has it open.
func unmountPoint(mnt string, lazy bool) error {
	if os.Geteuid() == 0 {
		return unmountRetry(mnt, lazy)
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	var err error
	for range 50 {
		if _, err = runTool(context.Background(), "fusermount3", append(args, mnt)...); err == nil || !IsMounted(mnt) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// detachLoop detaches a loop device and waits (briefly) until it has let
// go of its backing file.
func detachLoop(dev string) error {
	if _, err := runTool(context.Background(), "losetup", "-d", dev); err != nil {
		return err
	}
	backing := filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")
	for range 50 {
		if _, err := os.Stat(backing); err != nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// runTool runs a program and returns its output; the error carries stderr.
func runTool(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return string(out), fmt.Errorf("%s %s: %s", name, strings.Join(args, " "), msg)
	}
	return string(out), nil
}
