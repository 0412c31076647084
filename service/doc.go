// Package service runs vhdkit's long-running processes: `vhd serve`,
// the `vhd mount` server and, next, the guest runner. It owns what
// outlives one call into the engine: disks held open and served over
// NBD and FUSE, loop devices and filesystems mounted from them, sockets,
// state files, starting in the background, waiting for another process
// to let go of an image, signals and the order of teardown. A command
// in tools/vhd only turns flags into calls here and prints the results.
//
// # Lifecycle
//
//	h := service.New(service.Config{NBD: &nbdserve.Server{...}, Logger: log})
//	defer h.Close()                         // a setup that fails half-way
//	h.AddExport(ctx, "disk", chain, service.ExportOptions{FUSE: ...})
//	h.ListenUnix(path)                      // and/or ListenTCP
//	h.ListenControl(ctlPath, service.ControlOptions{...}) // vhd ctl
//	fmt.Println(h.URIs())
//	err := h.Run(ctx)                       // serves, then tears down
//
// A Host is set up (exports, listeners, state files), then Run serves
// until ctx ends (the first SIGINT/SIGTERM), a listener fails, or, with
// Config.StopOnUnmount, a FUSE mount is unmounted from outside (how
// `vhd umount` ends a mount server). Run then tears everything down and
// returns what failed. Exports can be added and removed while Run runs
// (AddExport, RemoveExport); listeners only before.
//
// An export is one engine.Disk (an image or chain) under a name, served
// over NBD on every listener and, if asked, mounted over FUSE
// (FUSEOptions), with the filesystems inside mounted through loop
// devices (FUSEOptions.Filesystems, root only: filesystems.go). From a
// successful AddExport on, the host owns the disk and closes it.
//
// RemoveExport stops NBD clients of the export the way shutdown does
// (nbdserve.Server.RemoveExport: new clients are told it is unknown;
// connections using it answer the requests they read, flush and close,
// or are closed after the grace period), then unmounts its filesystems
// and FUSE mount, flushes and closes the disk, and removes the folders
// made for the mount.
//
// # Teardown order
//
// Each step depends on the one before having finished, so it is one
// function (Host.teardown), run once:
//
//  1. Stop accepting and drain NBD: every connection stops reading
//     requests, answers the ones it read (waiting at most the NBD
//     server's ShutdownGrace, then closing connections still busy, such
//     as a client taking no replies) and flushes. The unix socket files
//     are removed right away, while the names are still ours; later
//     another server may have taken one.
//  2. Per export, the filesystems mounted from it are unmounted and
//     their loop devices detached (their writeback goes through the
//     FUSE files to the disk, so the FUSE mount must still be there),
//     then the FUSE mount is unmounted and its server waited for; it
//     flushes the disk. A mount unmounted from outside is not touched:
//     whoever unmounted it took its filesystems down first (the kernel
//     refuses otherwise).
//  3. The disks are flushed and closed: after this every write any
//     client was told succeeded is durable, and the images' locks are
//     released.
//  4. Folders made for mount points (FUSEOptions.MakeDir: `vhd serve
//     --fuse DIR` with several images makes DIR/NAME) are removed if
//     empty, then the state files: a state file outlives what it
//     describes, so a listing never misses a mount that still holds an
//     image.
//
// A mount that refuses to go (files open in it) is detached lazily with
// FUSEOptions.DetachBusy (vhd serve); otherwise it is retried for a few
// seconds and then left for the user to unmount (vhd mount, whose
// server waits for it).
//
// # Signals
//
// The first SIGINT or SIGTERM ends Run's context (main's
// signal.NotifyContext) and so starts the orderly teardown, which can
// take as long as the slowest client's grace period and the disks'
// flushes. OnSecondSignal lets a command act on a second one: vhd serve
// calls Host.Abandon, which flushes every writable disk at once (within
// AbandonFlushTimeout), detaches the FUSE mounts lazily and removes the
// sockets, and then exits with status 1. The images are then as after
// a crash, with every write before that flush durable.
//
// # Starting in the background
//
// `vhd mount` returns only once its mount works: StartBackground starts
// the same program again in its own session, output to a log, with the
// write end of a pipe as descriptor ReadyFD (3). The server says once,
// as a JSON line, that it is ready (with its state) or why it failed
// (ReadyPipe); if it dies without a word the pipe closes and the starter
// shows the end of its log. The wait is bounded (DefaultReadyTimeout)
// and ends, with SIGTERM to the server, when the starter is
// interrupted.
//
// # The state folder and its safety rules
//
// State, logs and default sockets live in vhd's private folder
// (RuntimeDir): $XDG_RUNTIME_DIR/vhdkit, else /run/vhdkit as root, else
// $TMPDIR/vhdkit-UID, which has a predictable name in a folder every
// user writes. So statedir.go trusts it only if it is a real folder (not
// a symlink), owned by this user, mode exactly 0700, inside a folder of
// this user's or root's that others cannot write or that is sticky;
// otherwise it refuses, naming the folder and what to do, and never
// repairs it (it may be someone else's). Files there are written to a
// fresh name (O_EXCL|O_NOFOLLOW) and renamed into place, logs opened
// O_NOFOLLOW and truncated only after fstat shows a regular file of
// ours, and files are read only if they are regular files of this
// user's: a state file someone else wrote is refused, not acted on.
// vhd serve's default socket goes in the user's runtime folder when it
// is theirs and writable by nobody else, else in the private folder
// (SocketDir), never in the bare temporary folder.
//
// Each mount has mounts/ID.json (MountState: image, layers, mode, undo
// disk, server pid, log, filesystems and loop devices) and mounts/ID.log,
// ID being a hash of the absolute mount point. The state lives in a
// runtime folder (tmpfs, gone at a reboot, as the mounts are), so it is
// not synced. ListMounts drops the state of a mount whose server is gone
// and whose mount point is no longer mounted; a dead server whose FUSE
// mount is still there (ENOTCONN) stays listed for Unmount to clean up.
//
// # Unmounting and waiting for the lock
//
// Unmount takes a mount down in order (filesystems, loop devices, the
// FUSE mount; lazily if its server is dead), then waits for its own
// server (the pid in its state) to exit: only then is everything flushed
// and closed, and the undo disk may be committed or discarded. Not for
// the image's flock, which another mount of the image may hold; only a
// mount whose state was lost (no pid) is waited for by the lock
// (WaitUnlocked). HolderHint turns the pid holding a locked image into
// the mount point or socket that holds it, for error messages.
//
// # The control socket
//
// ListenControl gives a host a control socket (control*.go): HTTP with
// JSON on a unix socket, through which `vhd ctl` changes what the host
// serves while it serves it (vhd serve's, and vhd run's for the guest's
// disks). With ControlOptions.VM it also serves the /v1/vm routes on a
// running guest (control_vm.go: status, pause, resume, powerdown,
// reset, save); a host without one answers them no_vm. Its routes are in
// control_api.go, its JSON shapes in control_json.go (stable: fields are
// added, never renamed or removed) and both in docs/CLI.md; errors are
// {"error": {"code", "message"}} with the code's HTTP status
// (control_errors.go). ControlClient is its client; FindControl and
// ControlOfNBDSocket find a server's socket from its pid or NBD socket.
//
//   - Only this user: the socket is given mode 0600 before it is bound,
//     so its file never has a wider one (bind replaces nothing; a stale
//     socket nobody answers on is removed first), and every connection's
//     peer uid (SO_PEERCRED) must be ours, or it is answered 403 and
//     closed before a handler sees it.
//   - One live operation per export: snapshot, merge, undo commit or
//     discard, removal and the cutting of a view each claim the export,
//     and a second claim is refused as busy at once, naming the job;
//     nothing waits unseen behind the chain's own lock.
//   - Merges and undo commits are jobs (control_jobs.go): the request
//     returns the job, which runs under the socket's context, not the
//     request's, until it ends or is cancelled (POST .../cancel). A
//     cancelled merge leaves its journal: the export serves what it
//     served, and the same merge run again live (or `vhd merge` offline)
//     finishes it.
//   - Run stops the control socket as soon as it decides to stop, before
//     NBD drains, and teardown does first of all: running jobs are
//     cancelled and waited for, so no chain is closed under a merge.
//   - A guest's save claims every disk export of the guest for its
//     paused moment, and a guest's own disk is never removed over the
//     socket.
//   - Requests are bounded: a body of at most 64 KiB, one JSON object,
//     unknown fields refused, names and paths checked before anything is
//     opened (control_decode.go, fuzzed by FuzzControlRequest); a handler
//     that panics answers 500 in JSON and the server goes on.
//
// # Logging
//
// Through Config.Logger, silent when nil: what is torn down and why at
// Info, a mount that would not unmount at Warn or Error.
package service
