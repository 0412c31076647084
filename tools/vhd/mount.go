package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"vhdkit/internal/shq"
	"vhdkit/service"
)

var mountCmd = &command{
	name:       "mount",
	otherFlags: guestmountFlags,
	args:       "[flags] IMAGE MOUNTPOINT | --list",
	summary:    "show an image's disk and partitions as files (FUSE), with undo by default",
	doc: `Mounts IMAGE (with its parents) at MOUNTPOINT as a folder holding:

  disk        the whole virtual disk, a file of its size
  p1, p2 ...  one file per partition (MBR, logical partitions from p5, or GPT)
  info.json   the image, its chain, the mode and the partition table
  fs/pN       with --fs: the filesystems inside, mounted

By default writes go to an undo disk (IMAGE's name with .vud, beside it)
and IMAGE itself is never written; 'vhd umount --commit' merges the
changes into IMAGE, 'vhd umount --discard' drops them, and without
either the undo disk stays for later ('vhd undo'). --no-undo writes to
IMAGE itself, and is refused while IMAGE has an undo disk or other
differencing images depend on it (writing it would make them wrong);
--read-only refuses writes.

The command returns once the mount is ready and a server keeps running
in the background (its output goes to a log under vhd's private folder:
$XDG_RUNTIME_DIR/vhdkit, else /run/vhdkit as root, else
$TMPDIR/vhdkit-UID; it must be yours alone, mode 0700, and vhd refuses
one that is not, saying what to do); --foreground keeps it
attached instead, until the mount is unmounted or the command is
interrupted. Partitions written through disk (sfdisk, parted) appear
without remounting. fsync on the files makes writes durable; SEEK_DATA
and SEEK_HOLE skip unallocated space; fallocate punches holes.

--fs (root only) attaches each partition (or the whole disk without a
partition table) to a loop device and mounts the filesystem found there
under MOUNTPOINT/fs/: ext2/3/4, xfs and btrfs with the kernel, NTFS with
ntfs-3g; read-write unless --read-only. A filesystem this machine cannot
mount (vfat here: no driver) is reported, not fatal.

What the mount shows belongs to the user who mounted it, and the kernel
checks every access against its modes: the owner reads and (unless
--read-only) writes; group and others get nothing unless --umask grants
it (022: everyone reads; 002: the group writes too), and other users get
in at all only with --allow-other.

With no arguments, or --list, lists what is mounted from which image.
Unmount with 'vhd umount MOUNTPOINT'.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		readOnly := fs.BoolP("read-only", "r", false, "refuse writes")
		noUndo := fs.Bool("no-undo", false, "write to IMAGE itself, not to an undo disk")
		allowOther := fs.Bool("allow-other", false, "let other users in, as far as --umask allows (non-root needs user_allow_other in /etc/fuse.conf)")
		umask := fs.String("umask", defaultUmask, "octal permission bits taken from group and others (077: the owner alone; 022: everyone reads)")
		foreground := fs.Bool("foreground", false, "serve from this process until unmounted or interrupted")
		withFS := fs.Bool("fs", false, "also mount the filesystems inside under MOUNTPOINT/fs (root)")
		list := fs.Bool("list", false, "list the mounts and exit")
		asJSON := fs.Bool("json", false, "with --list: print the mounts as JSON")
		debug := fs.Bool("debug", false, "log every FUSE request (to the log, or stderr with --foreground)")
		readyFD := fs.Int("ready-fd", -1, "")
		fs.MarkHidden("ready-fd")
		return func(ctx context.Context, e *env, args []string) error {
			if *list || len(args) == 0 {
				if len(args) > 0 {
					return usageErr("--list takes no arguments")
				}
				return listMounts(e, *asJSON)
			}
			if err := wantArgs(args, "IMAGE", "MOUNTPOINT"); err != nil {
				return err
			}
			if *readOnly && *noUndo {
				return usageErr("--read-only and --no-undo: choose one")
			}
			if *withFS && os.Geteuid() != 0 {
				return errors.New("--fs mounts filesystems with loop devices: run as root")
			}
			req := service.MountRequest{Mode: mountMode(*readOnly, *noUndo), AllowOther: *allowOther, Filesystems: *withFS, Debug: *debug}
			var err error
			if req.GroupOtherPerm, err = parseUmask(*umask); err != nil {
				return err
			}
			if req.Image, err = filepath.Abs(args[0]); err != nil {
				return err
			}
			if req.Mountpoint, err = filepath.Abs(args[1]); err != nil {
				return err
			}
			if err := service.PrepareMount(req.Mountpoint); err != nil {
				return err
			}
			if !*foreground {
				// The same command line (everything after the program
				// name), served in the foreground by the background server.
				args := append([]string{os.Args[1], "--foreground", fmt.Sprintf("--ready-fd=%d", service.ReadyFD)}, os.Args[2:]...)
				st, err := service.StartMount(ctx, req.Mountpoint, args)
				if err != nil {
					return err
				}
				printMounted(e, st)
				return nil
			}
			req.Chain = cf.options(false)
			return serveMount(ctx, e, req, *readyFD)
		}
	},
}

func mountMode(readOnly, noUndo bool) string {
	switch {
	case readOnly:
		return service.ModeReadOnly
	case noUndo:
		return service.ModeNoUndo
	}
	return service.ModeUndo
}

// serveMount is the mount server: it serves until unmounted or
// interrupted, telling the waiting 'vhd mount' (readyFD) or the user
// when the mount is ready, or why it failed.
func serveMount(ctx context.Context, e *env, req service.MountRequest, readyFD int) error {
	pipe := service.OpenReadyPipe(readyFD)
	if pipe != nil {
		req.Log = service.LogPath(req.Mountpoint)
	}
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	err := service.ServeMount(ctx, req, func(st *service.MountState) {
		if pipe != nil {
			pipe.Ready(st)
		} else {
			printMounted(e, st)
		}
	}, logger)
	if err != nil {
		pipe.FailWith(userText("mount", err))
	}
	return err
}

func printMounted(e *env, st *service.MountState) {
	fmt.Fprintf(e.stdout, "mounted %s at %s (%s, pid %d)\n", st.Image, st.Mountpoint, st.Mode, st.PID)
	if st.Mode == service.ModeUndo {
		fmt.Fprintf(e.stdout, "changes go to the undo disk %s: 'vhd umount --commit %s' keeps them in the image, 'vhd umount --discard %s' drops them\n", st.UndoDisk, shq.Quote(st.Mountpoint), shq.Quote(st.Mountpoint))
	}
	for _, f := range st.FS {
		if f.Mounted {
			fmt.Fprintf(e.stdout, "  %s: %s on %s (%s)\n", f.Part, f.Type, f.Dir, f.Loop)
		} else {
			fmt.Fprintf(e.stdout, "  %s: not mounted: %s\n", f.Part, f.Note)
		}
	}
}

// listMounts prints what is mounted from which image.
func listMounts(e *env, asJSON bool) error {
	list, err := service.ListMounts()
	if err != nil {
		return err
	}
	if asJSON {
		if list == nil {
			list = []*service.MountState{}
		}
		return writeJSON(e, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "nothing is mounted")
		return nil
	}
	for _, s := range list {
		state := fmt.Sprintf("pid %d", s.PID)
		if !s.Alive {
			state = "server gone: 'vhd umount' cleans it up"
		}
		if s.Server != "" && s.Alive {
			state += fmt.Sprintf(", %s export %s", s.Server, s.Export)
		}
		fmt.Fprintf(e.stdout, "%s  %s  %s  %s\n", s.Mountpoint, s.Image, s.Mode, state)
		if s.UndoDisk != "" {
			fmt.Fprintf(e.stdout, "  undo disk %s\n", s.UndoDisk)
		}
		for _, f := range s.FS {
			if f.Mounted {
				fmt.Fprintf(e.stdout, "  %s: %s on %s (%s)\n", f.Part, f.Type, f.Dir, f.Loop)
			}
		}
	}
	return nil
}
