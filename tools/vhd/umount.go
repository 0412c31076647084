package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"vhdkit/chains"
)

var umountCmd = &command{
	name:    "umount",
	args:    "[--commit | --discard] MOUNTPOINT",
	summary: "unmount a 'vhd mount'; commit or discard its undo disk",
	doc: `Unmounts what 'vhd mount' mounted at MOUNTPOINT, in order: the
filesystems of 'vhd mount --fs', their loop devices, then the FUSE
mount. It waits for the server to flush the image and let go of it,
then:

  --commit   merges the undo disk into the image and deletes it
  --discard  deletes the undo disk: the image is exactly as before
  (neither)  keeps the undo disk and says where it is ('vhd undo')

If the server died (killed, crashed), the mount is dead (ENOTCONN):
umount detaches it lazily, cleans up its loop devices and state, and
can still commit or discard: the image and undo disk are as consistent
as after any crash, every flushed write in place.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		commit := fs.Bool("commit", false, "merge the undo disk into the image")
		discard := fs.Bool("discard", false, "delete the undo disk, dropping the changes")
		timeout := fs.Duration("timeout", time.Minute, "how long to wait for the server to flush and exit")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "MOUNTPOINT"); err != nil {
				return err
			}
			if *commit && *discard {
				return usageErr("--commit and --discard: choose one")
			}
			mnt, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			st, err := loadStateOf(mnt)
			if errors.Is(err, os.ErrNotExist) {
				// No state (lost with /run, say): a vhd FUSE mount names
				// its image as its source.
				src, ok := fuseMounts()[mnt]
				if !ok {
					return fmt.Errorf("%s is not a 'vhd mount' mount point ('vhd mount --list' shows them)", mnt)
				}
				st = &mountState{Mountpoint: mnt, Image: src, Mode: modeUndo, UndoDisk: chains.UndoPath(src)}
				if _, err := os.Stat(st.UndoDisk); err != nil {
					st.Mode, st.UndoDisk = modeNoUndo, ""
				}
			} else if err != nil {
				return err
			}
			if (*commit || *discard) && st.Mode != modeUndo {
				return usageErr("%s was mounted %s: there is no undo disk to commit or discard", mnt, st.Mode)
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			lazy := !st.Alive
			if lazy {
				fmt.Fprintf(e.stderr, "vhd umount: the server of %s is gone; cleaning up the dead mount\n", mnt)
			}
			if err := teardownFilesystems(st.FS, lazy, log); err != nil {
				return fmt.Errorf("%w (close the files open on them and run 'vhd umount' again)", err)
			}
			if err := unmountFUSE(mnt, lazy); err != nil {
				return fmt.Errorf("unmount %s: %w (close the files open in it and run 'vhd umount' again)", mnt, err)
			}
			if err := waitServer(ctx, st, *timeout); err != nil {
				return err
			}
			removeState(mnt)
			os.Remove(logPath(mnt))
			fmt.Fprintf(e.stdout, "unmounted %s (%s)\n", mnt, st.Image)
			if st.Mode != modeUndo {
				return nil
			}
			switch {
			case *commit:
				res, err := chains.Commit(ctx, st.Image, chains.MergeOptions{Open: cf.options(false)})
				if errors.Is(err, chains.ErrHasChildren) {
					return fmt.Errorf("commit: %w; the undo disk %s is kept ('vhd undo commit --force %s' commits it anyway, and they become invalid)", err, st.UndoDisk, st.Image)
				}
				if err != nil {
					return fmt.Errorf("commit: %w (the undo disk %s is kept)", err, st.UndoDisk)
				}
				fmt.Fprintf(e.stdout, "committed %s of changes into %s; removed %s\n", human(res.Copied), st.Image, st.UndoDisk)
			case *discard:
				if err := chains.Discard(st.Image); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "discarded %s; %s is as it was\n", st.UndoDisk, st.Image)
			default:
				fmt.Fprintf(e.stdout, "the changes are kept in the undo disk %s ('vhd undo commit|discard %s')\n", st.UndoDisk, st.Image)
			}
			return nil
		}
	},
}

// waitServer waits for the server to exit and for its image (and undo
// disk) to be unlocked: only then is everything flushed and closed.
func waitServer(ctx context.Context, st *mountState, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for st.PID > 0 && processAlive(st.PID) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the server (pid %d) is still running %v after the unmount; its log: %s", st.PID, timeout, st.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	files := []string{st.Image}
	if st.UndoDisk != "" {
		files = append(files, st.UndoDisk)
	}
	for _, f := range files {
		if err := waitUnlocked(ctx, f, time.Until(deadline)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
