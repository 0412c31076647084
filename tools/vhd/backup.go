package main

import (
	"context"
	"slices"

	"github.com/spf13/pflag"

	"vhdkit/nbdclient"
)

var backupCmd = &command{
	name:    "backup",
	args:    "begin|end|list PATH [EXPORT] | pull URI DEST.vhd",
	summary: "consistent backups of running disks: cut a point, pull it over NBD (full or incremental), end it",
	doc: `Backs up a disk that 'vhd serve' (or 'vhd run') serves while it is written
(docs/BACKUP.md is the guide). PATH is the server's control socket, as
for 'vhd ctl' (or its pid, or its NBD socket).

  begin PATH EXPORT [--since PREV.vhd|UUID]
        cut a point of EXPORT: the guest's filesystems are frozen through
        its agent when the server runs one (vhd run), else the requests
        in flight are drained and the disk flushed (crash-consistent);
        a new top is cut live (EXPORT's writes go on at once) and the
        frozen point is exported read-only as EXPORT-backup, with the
        blocks changed since the previous point (--since: that point,
        or the one PREV.vhd is the backup of). Prints the URI, the
        export and the point.
  pull URI DEST.vhd [--since PREV.vhd] [--connections N] [--tls-ca F]
        copy the export into DEST.vhd: the allocated blocks into a
        dynamic VHD, or with --since only the changed blocks into a
        differencing VHD over PREV.vhd (which must be the backup of the
        point the export lists changes since). Checks every block it
        copied, writes DEST.vhd.part and renames it only when whole;
        run again after an interruption, it resumes. Any NBD server
        works for a full pull (nbdkit, qemu-nbd).
        An nbds:// (or nbds+unix://) URI is pulled over TLS on every
        connection, never in plaintext: the server's certificate is
        checked against --tls-ca (else the system's CAs) for the URI's
        host (or --tls-server-name); --tls-cert and --tls-key present a
        client certificate to a server that asks for one (vhd serve
        --tls-ca). The URI may name a folder of libnbd's files instead,
        ?tls-certificates=DIR (ca-cert.pem, client-cert.pem and
        client-key.pem, each used when there).
  end PATH EXPORT [--keep]
        stop serving the backup and fold its frozen layer into its
        parent (a live merge, followed like 'vhd ctl merge'), or with
        --keep keep it as a restore point. The next begin lists the
        changes since this point either way.
  list PATH
        the backups running, and the points each chain holds.

A chain of backups (full, then incrementals over it) is an ordinary VHD
chain: 'vhd convert --to raw LAST.vhd disk.raw' restores the last point,
'vhd merge' folds them, 'vhd mount' and 'vhd run' open them.`,
	setup: func(fs *pflag.FlagSet) runFunc {
		o := &backupOptions{}
		fs.BoolVar(&o.ctl.json, "json", false, "print JSON")
		fs.StringVar(&o.since, "since", "", "begin: list changes since this point (a backup file or a UUID); pull: the backup DEST is an increment of")
		fs.IntVar(&o.connections, "connections", 4, "pull: NBD connections (when the server allows several)")
		addTLSFlags(fs, &o.tls, "pull: ")
		fs.BoolVar(&o.keep, "keep", false, "end: keep the frozen layer as a restore point")
		fs.BoolVar(&o.ctl.noWait, "no-wait", false, "end: print the fold's job and return without waiting")
		fs.BoolVar(&o.ctl.noProgress, "no-progress", false, "never show a progress bar")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usageErr("want a verb: begin, pull, end or list")
			}
			v, ok := backupVerbs[args[0]]
			if !ok {
				return usageErr("%q is not a backup verb: want begin, pull, end or list", args[0])
			}
			for _, f := range []string{"since", "connections", "keep", "no-wait", "tls-ca", "tls-cert", "tls-key", "tls-server-name"} {
				if fs.Changed(f) && !slices.Contains(v.flags, f) {
					return usageErr("--%s does not go with %s", f, args[0])
				}
			}
			o.ctl.changed = fs.Changed
			return v.run(ctx, e, o, args[1:])
		}
	},
}

// backupOptions are vhd backup's flags.
type backupOptions struct {
	ctl         ctlOptions
	since       string
	connections int
	keep        bool
	tls         nbdclient.TLSFiles
}

type backupVerb struct {
	run   func(ctx context.Context, e *env, o *backupOptions, args []string) error
	flags []string
}

var backupVerbs map[string]backupVerb

func init() {
	backupVerbs = map[string]backupVerb{
		"begin": {backupBegin, []string{"since"}},
		"pull":  {backupPull, []string{"since", "connections", "tls-ca", "tls-cert", "tls-key", "tls-server-name"}},
		"end":   {backupEnd, []string{"keep", "no-wait"}},
		"list":  {backupList, nil},
	}
}
