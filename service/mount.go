package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"vhdkit/chains"
	"vhdkit/internal/shq"
	"vhdkit/vhdfs"
)

// A mount (vhd mount) is a host with one export, mounted over FUSE (and
// its filesystems, if asked), no NBD listener, and a state file; it
// runs until the mount is unmounted (Unmount, from vhd umount) or the
// server is interrupted.

// MountRequest is what a mount server is asked to mount.
type MountRequest struct {
	// Image and Mountpoint are absolute paths.
	Image, Mountpoint string
	// Mode is ModeUndo, ModeNoUndo or ModeReadOnly.
	Mode string
	// Chain says how to open the image's chain; ReadOnly is set from
	// Mode.
	Chain chains.Options
	// AllowOther, GroupOtherPerm and Debug go to the FUSE mount
	// (vhdfs.Options).
	AllowOther     bool
	GroupOtherPerm uint32
	Debug          bool
	// Filesystems also mounts the filesystems inside (root).
	Filesystems bool
	// Log is the server's log when it runs in the background, recorded
	// in the state.
	Log string
}

// PrepareMount checks that a mount can be made at mnt, before anything
// starts: vhd's state folder is safe (made if missing), vhd has nothing
// mounted there, and mnt is a folder.
func PrepareMount(mnt string) error {
	if _, err := MountsFolder(true); err != nil {
		return err
	}
	if st, err := LoadMountState(mnt); err == nil && st.Alive {
		return fmt.Errorf("%s is already a mount of %s (pid %d); 'vhd umount %s' first", mnt, st.Image, st.PID, shq.Quote(mnt))
	}
	if fi, err := os.Stat(mnt); err != nil || !fi.IsDir() {
		var pe *fs.PathError
		switch {
		case err == nil:
			err = errors.New("not a folder")
		case errors.As(err, &pe):
			err = pe.Err // the path is said once
		}
		return fmt.Errorf("mount point %s: %w", mnt, err)
	}
	return nil
}

// StartMount starts a mount server for mnt in the background (args:
// its command line after the program's name, serving in the foreground
// and reporting on ReadyFD) with its log in vhd's state folder, and
// returns the mount's state once it is ready.
func StartMount(ctx context.Context, mnt string, args []string) (*MountState, error) {
	if _, err := MountsFolder(true); err != nil {
		return nil, err
	}
	var st MountState
	err := StartBackground(ctx, Background{What: "the mount server", Args: args, Log: LogPath(mnt)}, &st)
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// openMount opens the image the way the mode asks: itself, read-only,
// or under its undo disk.
func openMount(req MountRequest) (*chains.Chain, error) {
	o := req.Chain
	o.ReadOnly = req.Mode == ModeReadOnly
	if req.Mode == ModeUndo {
		c, _, err := chains.OpenUndo(req.Image, o)
		return c, err
	}
	return chains.Open(req.Image, o)
}

// ServeMount is the mount server: it opens the image, mounts it (and
// its filesystems), saves the state, calls ready, and serves until the
// mount is unmounted or ctx ends; then it tears down in order (Host),
// flushing and closing the image, and removes the state.
func ServeMount(ctx context.Context, req MountRequest, ready func(*MountState), log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c, err := openMount(req)
	if err != nil {
		return err
	}
	st := &MountState{Mountpoint: req.Mountpoint, Image: req.Image, Mode: req.Mode, PID: os.Getpid(), Started: time.Now().UTC(), Log: req.Log}
	for _, l := range c.Layers() {
		st.Layers = append(st.Layers, l.Path)
	}
	if req.Mode == ModeUndo {
		st.UndoDisk = chains.UndoPath(req.Image)
	}
	h := New(Config{Logger: log, StopOnUnmount: true})
	ex, err := h.AddExport(ctx, "disk", c, ExportOptions{Description: req.Image, FUSE: &FUSEOptions{
		Dir:         req.Mountpoint,
		Filesystems: req.Filesystems,
		Mount: vhdfs.Options{
			ReadOnly:   req.Mode == ModeReadOnly,
			AllowOther: req.AllowOther,
			FsName:     req.Image,
			Info:       st, // info.json shows the state, filesystems included
			Logger:     log,
			Debug:      req.Debug,
			// The kernel enforces the modes (vhdfs/perm.go).
			GroupOtherPerm: req.GroupOtherPerm,
		},
	}})
	if err != nil {
		c.Close()
		return err
	}
	st.FS = ex.Filesystems
	if err := h.SaveState(st); err != nil {
		h.Close()
		return fmt.Errorf("saving the mount's state: %w", err)
	}
	ready(st)
	if err := h.Run(ctx); err != nil {
		return err
	}
	log.Info("vhd mount: unmounted, flushed and closed", "image", req.Image)
	for _, vud := range h.StopSummary().UndoRemoved {
		log.Info("vhd mount: no changes; the undo disk was removed", "undo_disk", vud)
	}
	return nil
}

// FindMount returns what is known of the vhd mount at mnt: its state
// file or, when that was lost (with /run, say), what the mount table
// says (a vhd FUSE mount names its image as its source; an undo disk
// beside the image means undo mode). Its Alive says whether its server
// runs.
func FindMount(mnt string) (*MountState, error) {
	st, err := LoadMountState(mnt)
	if !errors.Is(err, os.ErrNotExist) {
		return st, err
	}
	src, ok := FuseMounts()[mnt]
	if !ok {
		return nil, fmt.Errorf("%s is not a 'vhd mount' mount point ('vhd mount --list' shows them)", mnt)
	}
	st = &MountState{Mountpoint: mnt, Image: src, Mode: ModeUndo, UndoDisk: chains.UndoPath(src)}
	if _, err := os.Stat(st.UndoDisk); err != nil {
		st.Mode, st.UndoDisk = ModeNoUndo, ""
	}
	return st, nil
}

// Unmount takes the mount st describes down in order: its filesystems,
// their loop devices, then the FUSE mount (each unmount writes back
// through the one below it); it then waits, within timeout, for its
// server to exit, having flushed and closed the image, and removes the
// state and log. A mount whose server is gone (not st.Alive) is
// detached lazily: nothing can flush through it any more, and the image
// is as after any crash.
func Unmount(ctx context.Context, st *MountState, timeout time.Duration) error {
	log := slog.New(slog.DiscardHandler)
	lazy := !st.Alive
	if err := teardownFilesystems(st.FS, lazy, log); err != nil {
		return fmt.Errorf("%w (close the files open on them and run 'vhd umount' again)", err)
	}
	if err := unmountPoint(st.Mountpoint, lazy); err != nil {
		return fmt.Errorf("unmount %s: %w (close the files open in it and run 'vhd umount' again)", st.Mountpoint, err)
	}
	if err := waitServer(ctx, st, timeout); err != nil {
		return err
	}
	RemoveMountState(st.Mountpoint)
	os.Remove(LogPath(st.Mountpoint))
	return nil
}
