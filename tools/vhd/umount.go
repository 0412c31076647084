package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/service"
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
			st, err := service.FindMount(mnt)
			if err != nil {
				return err
			}
			if (*commit || *discard) && st.Mode != service.ModeUndo {
				return usageErr("%s was mounted %s: there is no undo disk to commit or discard", mnt, st.Mode)
			}
			if !st.Alive {
				fmt.Fprintf(e.stderr, "vhd umount: the server of %s is gone; cleaning up the dead mount\n", mnt)
			}
			if err := service.Unmount(ctx, st, *timeout); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "unmounted %s (%s)\n", mnt, st.Image)
			if st.Mode != service.ModeUndo {
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
