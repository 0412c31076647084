package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/internal/shq"
	"vhdkit/service"
)

var umountCmd = &command{
	name:    "umount",
	args:    "[--commit | --discard] MOUNTPOINT|IMAGE | --all",
	summary: "unmount a 'vhd mount'; commit or discard its undo disk",
	doc: `Unmounts what 'vhd mount' mounted at MOUNTPOINT, or wherever it mounted
IMAGE (as Dismount-VHD -Path does), or with --all every 'vhd mount' of
this user. In order: the filesystems of 'vhd mount --fs', their loop
devices, then the FUSE mount. It waits for the server to flush the image
and let go of it, then:

  --commit   merges the undo disk into the image and deletes it
  --discard  deletes the undo disk: the image is exactly as before
  (neither)  keeps the undo disk and says where it is ('vhd undo')

An undo disk that took no write is removed by the server as it closes
it; umount then says "no changes; the undo disk ... was removed".

With --all, --commit and --discard apply to the mounts that have an undo
disk; the others are only unmounted. A mount that fails to come down is
reported and the others still are; the exit status is then 1.

If the server died (killed, crashed), the mount is dead (ENOTCONN):
umount detaches it lazily, cleans up its loop devices and state, and
can still commit or discard: the image and undo disk are as consistent
as after any crash, every flushed write in place.

--json prints a list, one entry per mount: {mount_point, image, undo,
undo_disk, committed_bytes, error}, undo being "none" (not mounted with
an undo disk), "removed" (it took no write), "committed", "discarded"
or "kept"; error is set for a mount that is still mounted.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		var u unmounter
		fs.BoolVar(&u.commit, "commit", false, "merge the undo disk into the image")
		fs.BoolVar(&u.discard, "discard", false, "delete the undo disk, dropping the changes")
		fs.DurationVar(&u.timeout, "timeout", time.Minute, "how long to wait for the server to flush and exit")
		all := fs.Bool("all", false, "unmount every 'vhd mount' of this user")
		fs.BoolVar(&u.json, "json", false, "print what was done to each mount as JSON (keys above)")
		return func(ctx context.Context, e *env, args []string) error {
			u.e, u.open = e, cf.options(false)
			if u.commit && u.discard {
				return usageErr("--commit and --discard: choose one")
			}
			if *all {
				if len(args) != 0 {
					return usageErr("--all unmounts everything: give no MOUNTPOINT or IMAGE")
				}
				return u.all(ctx)
			}
			if err := wantArgs(args, "MOUNTPOINT|IMAGE"); err != nil {
				return err
			}
			sts, err := findUnmountTargets(args[0])
			if err != nil {
				return err
			}
			for _, st := range sts {
				if err := servedMount(st); err != nil {
					return err
				}
				if (u.commit || u.discard) && st.Mode != service.ModeUndo {
					return usageErr("%s was mounted %s: there is no undo disk to commit or discard", st.Mountpoint, st.Mode)
				}
			}
			return u.each(ctx, sts)
		}
	},
}

// findUnmountTargets finds the mount a MOUNTPOINT|IMAGE argument names:
// a folder is a mount point; a file is an image, and every 'vhd mount'
// of it is meant (read-only mounts of one image may be several).
func findUnmountTargets(arg string) ([]*service.MountState, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil || fi.IsDir() || service.IsMounted(abs) {
		// A dead mount point fails stat (ENOTCONN) and is still one.
		st, err := service.FindMount(abs)
		if err != nil {
			return nil, err
		}
		return []*service.MountState{st}, nil
	}
	list, err := service.ListMounts()
	if err != nil {
		return nil, err
	}
	var found []*service.MountState
	for _, st := range list {
		if isFile(st.Image, fi) {
			found = append(found, st)
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("%s is not mounted by 'vhd mount' ('vhd mount --list' shows the mounts; a 'vhd serve --fuse' mount ends when that server stops)", arg)
	}
	return found, nil
}

func isFile(path string, fi os.FileInfo) bool {
	other, err := os.Stat(path)
	return err == nil && os.SameFile(other, fi)
}

// servedMount refuses a live 'vhd serve --fuse' mount: it is its
// server's to take down, with the NBD export beside it.
func servedMount(st *service.MountState) error {
	if st.Server == "" || !st.Alive {
		return nil
	}
	return fmt.Errorf("%s is served by 'vhd serve' (pid %d, export %s) and ends with it: stop that server (Ctrl-C where it runs, or kill %d), or 'vhd ctl %s remove %s'",
		st.Mountpoint, st.PID, st.Export, st.PID, st.Control, st.Export)
}

// unmounter takes mounts down and then deals with their undo disks.
type unmounter struct {
	e               *env
	open            chains.Options
	commit, discard bool
	timeout         time.Duration
	json            bool
}

// unmounted is what umount did to one mount (--json).
type unmounted struct {
	Mountpoint string `json:"mount_point"`
	Image      string `json:"image"`
	// Undo: none, removed (empty), committed, discarded or kept.
	Undo     string `json:"undo"`
	UndoDisk string `json:"undo_disk,omitempty"`
	Copied   int64  `json:"committed_bytes"`
	Error    string `json:"error,omitempty"`
}

// say prints a line of text, unless umount speaks JSON.
func (u *unmounter) say(format string, args ...any) {
	if !u.json {
		fmt.Fprintf(u.e.stdout, format, args...)
	}
}

// all unmounts every mount listed, going on past failures.
func (u *unmounter) all(ctx context.Context) error {
	list, err := service.ListMounts()
	if err != nil {
		return err
	}
	var own []*service.MountState
	for _, st := range list {
		if servedMount(st) != nil {
			fmt.Fprintf(u.e.stderr, "vhd umount: leaving %s to the 'vhd serve' that serves it (pid %d)\n", st.Mountpoint, st.PID)
			continue
		}
		own = append(own, st)
	}
	if len(own) == 0 {
		if u.json {
			return writeJSON(u.e, []unmounted{})
		}
		fmt.Fprintln(u.e.stdout, "nothing is mounted")
		return nil
	}
	return u.each(ctx, own)
}

// each unmounts sts in turn; it stops at nothing but says what failed.
func (u *unmounter) each(ctx context.Context, sts []*service.MountState) error {
	failed := 0
	var done []unmounted
	for _, st := range sts {
		r := unmounted{Mountpoint: st.Mountpoint, Image: st.Image, Undo: "none"}
		err := u.one(ctx, st, &r)
		if err != nil {
			r.Error = err.Error()
		}
		done = append(done, r)
		if err != nil {
			if len(sts) == 1 {
				if u.json {
					writeJSON(u.e, done)
				}
				return err
			}
			fmt.Fprintf(u.e.stderr, "vhd umount: %s: %v\n", st.Mountpoint, err)
			failed++
		}
	}
	if u.json {
		if err := writeJSON(u.e, done); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d mounts are still mounted (see above)", failed, len(sts))
	}
	return nil
}

func (u *unmounter) one(ctx context.Context, st *service.MountState, r *unmounted) error {
	if !st.Alive {
		fmt.Fprintf(u.e.stderr, "vhd umount: the server of %s is gone; cleaning up the dead mount\n", st.Mountpoint)
	}
	if err := service.Unmount(ctx, st, u.timeout); err != nil {
		return err
	}
	u.say("unmounted %s (%s)\n", st.Mountpoint, st.Image)
	if st.Mode != service.ModeUndo {
		return nil
	}
	r.UndoDisk = st.UndoDisk
	if _, err := os.Stat(st.UndoDisk); errors.Is(err, os.ErrNotExist) {
		// The server deleted it: it held nothing (chains/undo_empty.go).
		r.Undo = "removed"
		u.say("no changes; the undo disk %s was removed\n", st.UndoDisk)
		return nil
	}
	r.Undo = "kept"
	switch {
	case u.commit:
		res, err := chains.Commit(ctx, st.Image, chains.MergeOptions{Open: u.open})
		if errors.Is(err, chains.ErrHasChildren) {
			return fmt.Errorf("commit: %w; the undo disk %s is kept ('vhd undo commit --force %s' commits it anyway, and they become invalid)", err, st.UndoDisk, shq.Quote(st.Image))
		}
		if err != nil {
			return fmt.Errorf("commit: %w (the undo disk %s is kept)", err, st.UndoDisk)
		}
		r.Undo, r.Copied = "committed", res.Copied
		u.say("committed %s of changes into %s; removed %s\n", human(res.Copied), st.Image, st.UndoDisk)
	case u.discard:
		if err := chains.Discard(st.Image); err != nil {
			return err
		}
		r.Undo = "discarded"
		u.say("discarded %s; %s is as it was\n", st.UndoDisk, st.Image)
	default:
		u.say("the changes are kept in the undo disk %s ('vhd undo commit|discard %s')\n", st.UndoDisk, shq.Quote(st.Image))
	}
	return nil
}
