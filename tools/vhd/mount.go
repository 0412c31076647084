package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"vhdkit/chains"
	"vhdkit/vhdfs"
)

var mountCmd = &command{
	name:    "mount",
	args:    "[flags] IMAGE MOUNTPOINT | --list",
	summary: "show an image's disk and partitions as files (FUSE), with undo by default",
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
		readOnly := fs.Bool("read-only", false, "refuse writes")
		noUndo := fs.Bool("no-undo", false, "write to IMAGE itself, not to an undo disk")
		allowOther := fs.Bool("allow-other", false, "let other users in, as far as --umask allows (non-root needs user_allow_other in /etc/fuse.conf)")
		umask := fs.String("umask", defaultUmask, "octal `MASK` of permission bits taken from group and others (077: the owner alone; 022: everyone reads)")
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
			req := mountRequest{cf: cf, readOnly: *readOnly, noUndo: *noUndo, allowOther: *allowOther, withFS: *withFS, debug: *debug}
			var err error
			if req.groupOther, err = parseUmask(*umask); err != nil {
				return err
			}
			if req.image, err = filepath.Abs(args[0]); err != nil {
				return err
			}
			if req.mnt, err = filepath.Abs(args[1]); err != nil {
				return err
			}
			if _, err := mountsFolder(true); err != nil {
				return err
			}
			if st, err := loadStateOf(req.mnt); err == nil && st.Alive {
				return fmt.Errorf("%s is already a mount of %s (pid %d); 'vhd umount %s' first", req.mnt, st.Image, st.PID, req.mnt)
			}
			if fi, err := os.Stat(req.mnt); err != nil || !fi.IsDir() {
				if err == nil {
					err = errors.New("not a folder")
				}
				return fmt.Errorf("mount point %s: %w", req.mnt, err)
			}
			if !*foreground {
				return detach(ctx, e, req)
			}
			return serveMount(ctx, e, req, *readyFD)
		}
	},
}

// mountRequest is what `vhd mount` was asked.
type mountRequest struct {
	cf                                  *chainFlags
	image, mnt                          string
	readOnly, noUndo, allowOther, debug bool
	withFS                              bool
	groupOther                          uint32 // vhdfs.Options.GroupOtherPerm, from --umask
}

func (r mountRequest) mode() string {
	switch {
	case r.readOnly:
		return modeReadOnly
	case r.noUndo:
		return modeNoUndo
	}
	return modeUndo
}

// readyMsg is what the server tells the waiting `vhd mount` once the
// mount is ready (or why it failed), as one JSON line on the ready pipe.
type readyMsg struct {
	Error string      `json:"error,omitempty"`
	State *mountState `json:"state,omitempty"`
}

// detach starts this program again as a background server (its own
// session, output to the log) and waits for it to say the mount is
// ready, through a pipe that is its fd 3.
func detach(ctx context.Context, e *env, req mountRequest) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := mountsFolder(true); err != nil {
		return err
	}
	logf, err := openPrivateLog(logPath(req.mnt))
	if err != nil {
		return err
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	// The same command line (everything after the program name), served
	// in the foreground by the child.
	args := append([]string{os.Args[1], "--foreground", "--ready-fd=3"}, os.Args[2:]...)
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return err
	}
	pw.Close()
	exited := make(chan struct{})
	go func() {
		cmd.Wait() // reaps the child if it dies before it is ready
		close(exited)
	}()
	type got struct {
		msg readyMsg
		err error
	}
	ch := make(chan got, 1)
	go func() {
		line, err := bufio.NewReader(pr).ReadBytes('\n')
		var m readyMsg
		if err == nil {
			err = json.Unmarshal(line, &m)
		}
		ch <- got{m, err}
	}()
	var g got
	select {
	case g = <-ch:
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		cmd.Process.Signal(syscall.SIGTERM)
		return fmt.Errorf("the mount server did not become ready in 2 minutes; its log: %s", logPath(req.mnt))
	}
	if g.err != nil || g.msg.Error != "" {
		<-exited
		why := g.msg.Error
		if why == "" {
			why = "the mount server exited before the mount was ready"
		}
		if tail := logTail(logPath(req.mnt), why); tail != "" {
			why += "\n" + tail
		}
		return errors.New(why)
	}
	printMounted(e, g.msg.State)
	return nil
}

// logTail is the end of a log file, for an error message, without the
// lines that repeat known (the error the server already sent).
func logTail(path, known string) string {
	var b []byte
	if f, err := openPrivateFile(path); err == nil {
		if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
			f.Seek(fi.Size()-64<<10, io.SeekStart)
		}
		b, _ = io.ReadAll(io.LimitReader(f, 64<<10))
		f.Close()
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if known == "" || !strings.Contains(line, known) {
			keep = append(keep, line)
		}
	}
	s := strings.TrimSpace(strings.Join(keep, "\n"))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

func printMounted(e *env, st *mountState) {
	fmt.Fprintf(e.stdout, "mounted %s at %s (%s, pid %d)\n", st.Image, st.Mountpoint, st.Mode, st.PID)
	if st.Mode == modeUndo {
		fmt.Fprintf(e.stdout, "changes go to the undo disk %s: 'vhd umount --commit %s' keeps them in the image, 'vhd umount --discard %s' drops them\n", st.UndoDisk, st.Mountpoint, st.Mountpoint)
	}
	for _, f := range st.FS {
		if f.Mounted {
			fmt.Fprintf(e.stdout, "  %s: %s on %s (%s)\n", f.Part, f.Type, f.Dir, f.Loop)
		} else {
			fmt.Fprintf(e.stdout, "  %s: not mounted: %s\n", f.Part, f.Note)
		}
	}
}

// openForMount opens the image the way the mode asks.
func openForMount(req mountRequest) (*chains.Chain, error) {
	switch req.mode() {
	case modeReadOnly:
		return chains.Open(req.image, req.cf.options(true))
	case modeNoUndo:
		return chains.Open(req.image, req.cf.options(false))
	}
	c, _, err := chains.OpenUndo(req.image, req.cf.options(false))
	return c, err
}

// serveMount is the server: open, mount, report ready, serve until
// unmounted or interrupted, then flush and close.
func serveMount(ctx context.Context, e *env, req mountRequest, readyFD int) (err error) {
	var ready *os.File
	if readyFD >= 0 {
		ready = os.NewFile(uintptr(readyFD), "ready")
	}
	tell := func(m readyMsg) {
		if ready != nil {
			b, _ := json.Marshal(m)
			ready.Write(append(b, '\n'))
			ready.Close()
			ready = nil
		}
	}
	defer func() {
		if err != nil {
			tell(readyMsg{Error: err.Error()})
		}
	}()
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := openForMount(req)
	if err != nil {
		return err
	}
	st := &mountState{Mountpoint: req.mnt, Image: req.image, Mode: req.mode(), PID: os.Getpid(), Started: time.Now().UTC()}
	for _, l := range c.Layers() {
		st.Layers = append(st.Layers, l.Path)
	}
	if req.mode() == modeUndo {
		st.UndoDisk = chains.UndoPath(req.image)
	}
	if ready != nil {
		st.Log = logPath(req.mnt)
	}
	srv, err := vhdfs.Mount(ctx, c, req.mnt, vhdfs.Options{
		ReadOnly:   req.readOnly,
		AllowOther: req.allowOther,
		FSDirs:     req.withFS,
		FsName:     req.image,
		Info:       st,
		Logger:     logger,
		Debug:      req.debug,
		// The kernel enforces the modes (vhdfs/perm.go).
		GroupOtherPerm: req.groupOther,
	})
	if err != nil {
		c.Close()
		return err
	}
	if req.withFS {
		st.FS = mountFilesystems(ctx, req.mnt, srv.Table(), req.readOnly, logger)
	}
	if err := st.save(); err != nil {
		teardownFilesystems(st.FS, false, logger)
		srv.Unmount()
		srv.Wait()
		c.Close()
		return fmt.Errorf("saving the mount's state: %w", err)
	}
	tell(readyMsg{State: st})
	if readyFD < 0 {
		printMounted(e, st)
	}
	select {
	case <-srv.Done():
	case <-ctx.Done():
		// Interrupted: unmount in order ourselves.
		logger.Info("vhd mount: interrupted; unmounting", "mountpoint", req.mnt)
		teardownFilesystems(st.FS, false, logger)
		if err := unmountFUSE(req.mnt, false); err != nil {
			logger.Error("vhd mount: unmount", "err", err)
		}
	}
	werr := srv.Wait() // flushes
	cerr := c.Close()
	removeState(req.mnt)
	if werr != nil {
		return fmt.Errorf("flushing %s: %w", req.image, werr)
	}
	if cerr != nil {
		return cerr
	}
	logger.Info("vhd mount: unmounted, flushed and closed", "image", req.image)
	return nil
}

// listMounts prints what is mounted from which image.
func listMounts(e *env, asJSON bool) error {
	list, err := listStates()
	if err != nil {
		return err
	}
	if asJSON {
		if list == nil {
			list = []*mountState{}
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

// waitUnlocked waits until no process holds a lock on path (the server
// has closed the image), up to timeout. It takes the same flock the
// engine takes, on a descriptor of its own, and lets go at once.
func waitUnlocked(ctx context.Context, path string, timeout time.Duration) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return unix.Flock(int(f.Fd()), unix.LOCK_UN)
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%s: lock: %w", path, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still in use after %v", path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
