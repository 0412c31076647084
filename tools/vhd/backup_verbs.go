package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"vhdkit/backup"
	"vhdkit/engine"
	"vhdkit/service"
)

// The vhd backup verbs: begin, end and list talk to the control socket
// (through ctlRun, as vhd ctl does); pull is the NBD client
// (backup.Pull).

func backupBegin(ctx context.Context, e *env, o *backupOptions, args []string) error {
	if err := wantArgs(args, "PATH", "EXPORT"); err != nil {
		return err
	}
	since, err := sinceUUID(o.since)
	if err != nil {
		return err
	}
	x, err := newCtlRun(e, &o.ctl, args[0])
	if err != nil {
		return err
	}
	var b *service.Backup
	if err := x.call(func(c *service.ControlClient) (err error) {
		b, err = c.BeginBackup(ctx, args[1], service.BeginRequest{Since: since})
		return
	}); err != nil {
		return x.serverError(err)
	}
	if o.ctl.json {
		if err := writeJSON(e, b); err != nil {
			return err
		}
	} else {
		printBackup(e.stdout, b, x.arg)
	}
	if b.Warning != "" {
		return fmt.Errorf("the backup began, but: %s", b.Warning)
	}
	return nil
}

// sinceUUID turns --since (a backup file, or a UUID) into the UUID the
// server takes.
func sinceUUID(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if u, err := backup.ParseUUID(s); err == nil {
		return u.String(), nil
	}
	img, err := engine.Open(s, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		return "", fmt.Errorf("--since %s: not a UUID, and not an image that can be read: %w", s, err)
	}
	defer img.Close()
	return img.Footer().UUID.String(), nil
}

// printBackup shows a running backup:
//
//	nbd+unix:///disk-backup?socket=/run/user/0/vhd-serve-1234.sock
//	export disk-backup: point /srv/disk.vhd (UUID ...), crash-consistent
//	changes since point UUID, in /srv/disk.since-....vhd
//	a backup of this point gets UUID ...
func printBackup(w io.Writer, b *service.Backup, path string) {
	for _, u := range b.URIs {
		fmt.Fprintln(w, u)
	}
	if b.FUSE != "" {
		fmt.Fprintf(w, "fuse:%s\n", b.FUSE)
	}
	fmt.Fprintf(w, "export %s: point %s (UUID %s), %s, of export %s\n", b.Name, b.Point.Path, b.Point.UUID, b.Consistency, b.Export)
	if b.Since == nil {
		fmt.Fprintln(w, "no earlier point: pull a full backup ('vhd backup pull URI DEST.vhd')")
	} else {
		fmt.Fprintf(w, "changes since point %s (vhdkit:changed), held by %d layer(s): pull an incremental over its backup ('vhd backup pull URI DEST.vhd --since PREV.vhd')\n", b.Since.UUID, len(b.Since.Layers))
	}
	fmt.Fprintf(w, "a backup of this point gets UUID %s; end it with 'vhd backup end %s %s'\n", b.BackupUUID, path, b.Export)
}

func backupPull(ctx context.Context, e *env, o *backupOptions, args []string) error {
	if err := wantArgs(args, "URI", "DEST.vhd"); err != nil {
		return err
	}
	if o.connections < 1 || o.connections > 64 {
		return usageErr("--connections %d: want 1 to 64", o.connections)
	}
	if err := tlsGoesWith(args[0], o.tls); err != nil {
		return err
	}
	bar := maybeBar(e, o.ctl.noProgress || o.ctl.json)
	res, err := backup.Pull(ctx, backup.PullOptions{
		URI: args[0], Dest: args[1], Since: o.since, Connections: o.connections, TLS: o.tls,
		Progress: bar.update,
		Notify: func(msg string) {
			bar.finish()
			fmt.Fprintf(e.stderr, "vhd backup pull: %s\n", msg)
		},
	})
	bar.finish()
	if err != nil {
		return keptOnInterrupt(err, "what was copied is kept in %s.part: run the same command again to resume", args[1])
	}
	if o.ctl.json {
		return writeJSON(e, res)
	}
	kind := "a full backup"
	if res.Base != "" {
		kind = "an incremental over " + res.Base
	}
	fmt.Fprintf(e.stdout, "%s: %s of a %s disk, point %s, verified\n", res.Dest, kind, ibytes(res.Size), orUnknown(res.Point))
	fmt.Fprintf(e.stdout, "copied %s (%s of data, %s of zeros written, %s of zeros skipped; %s copied before), over %d connection(s) in %.1f s; the file takes %s\n",
		ibytes(res.Read), ibytes(res.Written), ibytes(res.Zeroed), ibytes(res.SkippedZero), ibytes(res.Resumed), res.Connections, res.Seconds, ibytes(res.FileBytes))
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "not named by the server"
	}
	return s
}

func backupEnd(ctx context.Context, e *env, o *backupOptions, args []string) error {
	if err := wantArgs(args, "PATH", "EXPORT"); err != nil {
		return err
	}
	x, err := newCtlRun(e, &o.ctl, args[0])
	if err != nil {
		return err
	}
	var end *service.BackupEnd
	if err := x.call(func(c *service.ControlClient) (err error) {
		end, err = c.EndBackup(ctx, args[1], service.EndRequest{Keep: o.keep})
		return
	}); err != nil {
		return x.serverError(err)
	}
	if o.ctl.json {
		return endJSON(ctx, x, end)
	}
	if end.Job != nil {
		fmt.Fprintf(e.stdout, "backup %s ended; folding point %s into its parent\n", end.Name, end.Point.Path)
		return x.follow(ctx, end.Job)
	}
	switch {
	case end.Kept:
		fmt.Fprintf(e.stdout, "backup %s ended; point %s kept as a restore point (%s marks it)\n", end.Name, end.Point.Path, backup.KeptPath(end.Point.Path))
	default:
		fmt.Fprintf(e.stdout, "backup %s ended; %s\n", end.Name, end.Note)
	}
	sayWhereWritesGo(ctx, e, x, args[1])
	return nil
}

// sayWhereWritesGo names the export's top layer after a backup ended
// that left the point under it: the image the user started the server
// on is now a read-only layer, and the next 'vhd serve' must name the
// top, or the newest writes are not served.
func sayWhereWritesGo(ctx context.Context, e *env, x *ctlRun, export string) {
	var st *service.Status
	if err := x.call(func(c *service.ControlClient) (err error) { st, err = c.Status(ctx); return }); err != nil {
		return
	}
	for _, ex := range st.Exports {
		if ex.Name == export && len(ex.Layers) > 1 && !ex.ReadOnly {
			fmt.Fprintf(e.stdout, "writes go to %s now: serve or mount that file next time (or fold it into the layer under it with 'vhd merge %s' once the server stops)\n", ex.Layers[0], ex.Layers[0])
		}
	}
}

// endJSON prints BackupEnd, whose job is followed to its end first
// (unless --no-wait), so a script reads one shape either way; a fold
// that failed exits 1 (the JSON says why).
func endJSON(ctx context.Context, x *ctlRun, end *service.BackupEnd) error {
	for end.Job != nil && !x.o.noWait && !end.Job.Finished() {
		j, err := x.client.Job(ctx, end.Job.ID, 10*time.Second)
		if err != nil {
			return x.serverError(err)
		}
		end.Job = j
	}
	if err := writeJSON(x.e, end); err != nil {
		return err
	}
	if end.Job != nil && end.Job.Finished() && end.Job.State != service.JobSucceeded {
		return exitStatus(exitFailed)
	}
	return nil
}

func backupList(ctx context.Context, e *env, o *backupOptions, args []string) error {
	if err := wantArgs(args, "PATH"); err != nil {
		return err
	}
	x, err := newCtlRun(e, &o.ctl, args[0])
	if err != nil {
		return err
	}
	var l *service.BackupList
	if err := x.call(func(c *service.ControlClient) (err error) { l, err = c.Backups(ctx); return }); err != nil {
		return x.serverError(err)
	}
	if o.ctl.json {
		return writeJSON(e, l)
	}
	printBackupList(e.stdout, l, x.arg)
	return nil
}

// printBackupList shows the running backups and the points:
//
//	backup disk-backup of export disk: point /srv/disk.vhd (UUID ...), crash-consistent, full, begun 2026-...
//	  nbd+unix:///disk-backup?socket=...
//	export disk: points
//	  /srv/disk.vhd  UUID ...  running (a backup of it gets UUID ...)
func printBackupList(w io.Writer, l *service.BackupList, path string) {
	if len(l.Backups) == 0 {
		fmt.Fprintln(w, "no backup running")
	}
	for _, b := range l.Backups {
		fmt.Fprintln(w, backupLine(&b))
		for _, u := range b.URIs {
			fmt.Fprintf(w, "  %s\n", u)
		}
	}
	for _, cp := range l.Points {
		if len(cp.Points) == 0 {
			continue
		}
		fmt.Fprintf(w, "export %s holds these points as layers:\n", cp.Export)
		for _, p := range cp.Points {
			state := "left by a backup that did not end (fold it: 'vhd ctl " + path + " merge " + cp.Export + " --layer " + p.Path + "')"
			switch {
			case p.Running:
				state = "a backup of it runs"
			case p.Kept:
				state = "kept"
			case p.Base:
				state = "the base (nothing to fold it into)"
			}
			fmt.Fprintf(w, "  %s  UUID %s  %s; its backup has UUID %s\n", p.Path, p.UUID, state, p.BackupUUID)
		}
	}
}

// backupLine describes a running backup in one line (vhd backup list,
// vhd ctl status):
//
//	backup disk-backup of export disk: point /srv/disk.vhd (UUID ...), crash-consistent, changes since UUID, begun 2026-11-30 17:00:00Z
func backupLine(b *service.Backup) string {
	kind := "full"
	if b.Since != nil {
		kind = "changes since " + b.Since.UUID
	}
	line := fmt.Sprintf("backup %s of export %s: point %s (UUID %s), %s, %s, begun %s",
		b.Name, b.Export, b.Point.Path, b.Point.UUID, b.Consistency, kind, b.Started.Format("2006-01-02 15:04:05Z"))
	if b.Warning != "" {
		line += "; warning: " + b.Warning
	}
	return line
}
