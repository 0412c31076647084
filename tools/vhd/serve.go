package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/nbdserve"
	"vhdkit/service"
	"vhdkit/vhdfs"
)

var serveCmd = &command{
	name:       "serve",
	otherFlags: qemuNBDFlags,
	args:       "[--socket PATH] [--listen HOST:PORT] [--control PATH] [--read-only | --undo] [--fuse DIR] [--fork] [--pid-file F] [--tls-cert F --tls-key F [--tls-ca F]] IMAGE[=NAME]...",
	summary:    "export images (with their chains) over NBD, and over FUSE too, from one process",
	doc: `Exports each IMAGE over NBD under NAME (default: the file name without
its extension); a single image is also the default export "". Without
--socket or --listen it listens on a unix socket in $XDG_RUNTIME_DIR
(else /run/user/UID, else vhd's private folder: $TMPDIR/vhdkit-UID, or
/run/vhdkit as root; see 'vhd help mount'); TCP only with --listen,
on 127.0.0.1 unless a host is given. Each export's URI is printed on
standard output, one per line. SIGINT or SIGTERM stops accepting,
finishes the requests in flight (waiting at most --shutdown-grace, then
closing the connections still busy), flushes and closes the images; a
second signal flushes the images and exits at once (status 1).

Request data of all clients together is held within --memory-budget; a
request that does not fit waits, and its client is not read meanwhile
(one client may hold at most half the budget). A client that takes none
of a reply, or sends none of a WRITE's data, for --stall-timeout is
disconnected.

A differencing IMAGE is served with its chain of parents (writes go to
it). Images open for writing (one writer per image) unless --read-only;
--undo sends writes to the image's undo disk (.vud, see 'vhd undo')
instead. Writing an image that has an undo disk, or that other
differencing images depend on, is refused: it would make them wrong. Flushes (NBD FLUSH and FUA) are acknowledged only once the data
is durable; several connections may share an export (multi-conn).

--fuse DIR also mounts the same open disks over FUSE (see 'vhd mount'):
at DIR for a single image, at DIR/NAME for several (folders it makes
for them are removed when it stops). A write through one is read back
through the other at once.

A control socket (--control PATH, default $XDG_RUNTIME_DIR/vhdkit/
serve-PID.ctl, or /run/vhdkit/serve-PID.ctl as root, else vhd's private
folder; printed as control:PATH) lets 'vhd ctl' change the exports
while they are served: snapshot, merge, undo commit and discard, add and
remove exports, read-only views of frozen layers (see 'vhd help ctl');
'vhd backup' takes consistent backups of the exports through it.
Only the user who started vhd serve may use it.

With --tls-cert and --tls-key, TLS is required of every client; with
--tls-ca, clients must also present a certificate signed by that CA
(libnbd clients: add ?tls-certificates=DIR to the URI, DIR holding
ca-cert.pem, client-cert.pem and client-key.pem). NBD has no password,
so --listen on an address other machines reach is refused without
--tls-ca, unless --insecure-tcp is given.

--fork serves in the background (as qemu-nbd --fork): vhd serve returns
once the server listens, having printed the same lines, and says its pid
and log on stderr; --pid-file writes the pid, removed when it stops.
--description sets what clients show for the exports.

Each listener serves at most --max-connections clients; when it is full
a new client takes the place of the connection negotiating longest, else
of the one idle longest (2 s or more, no request in flight), which is
flushed and closed. Negotiation must end within --handshake-timeout.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		o := &serveOptions{}
		fs.StringVar(&o.socket, "socket", "", "listen on this unix socket (default: $XDG_RUNTIME_DIR/vhd-serve-PID.sock)")
		fs.StringVar(&o.listen, "listen", "", "listen on TCP HOST:PORT (HOST defaults to 127.0.0.1)")
		fs.BoolVar(&o.insecureTCP, "insecure-tcp", false, "allow --listen beyond this machine without TLS client certificates (anyone who reaches the port can read and write the disks)")
		fs.BoolVarP(&o.readOnly, "read-only", "r", false, "export the images read-only (qemu-nbd -r)")
		fs.BoolVar(&o.undo, "undo", false, "send writes to each image's undo disk (.vud) instead of the image")
		fs.StringVar(&o.fuse, "fuse", "", "also mount the disks over FUSE at this folder")
		fs.StringVar(&o.control, "control", "", "control socket for 'vhd ctl' (default: $XDG_RUNTIME_DIR/vhdkit/serve-PID.ctl)")
		fs.StringVar(&o.tlsCert, "tls-cert", "", "server certificate (PEM); makes TLS mandatory")
		fs.StringVar(&o.tlsKey, "tls-key", "", "server private key (PEM)")
		fs.StringVar(&o.tlsCA, "tls-ca", "", "CA (PEM) that client certificates must chain to")
		o.limits = addServeLimits(fs)
		bg := addServeBackground(fs)
		fs.StringVar(&o.description, "description", "", "the description clients show for every export (default: the image's file name)")
		cf := addChainFlags(fs)
		return func(ctx context.Context, e *env, args []string) error {
			o.socketGiven, o.listenGiven = fs.Changed("socket"), fs.Changed("listen")
			if err := o.validate(args); err != nil {
				return err
			}
			if bg.fork {
				return bg.startDetached(ctx, e)
			}
			o.stderr = e.stderr
			o.atAbandon = bg.removePIDFile
			log := newUserLog(e.stderr, "serve", slog.LevelWarn)
			return bg.runAnnouncing(e, func(announce func([]string) error) error {
				return serve(ctx, o, cf, announce, log)
			})
		}
	},
}

// serveOptions are the parsed command line of vhd serve.
type serveOptions struct {
	// atAbandon is what the second signal does before the process
	// exits, beyond flushing (the pid file goes).
	atAbandon                func()
	socket, listen           string
	insecureTCP              bool
	readOnly, undo           bool
	fuse, control            string
	description              string
	tlsCert, tlsKey, tlsCA   string
	exports                  []exportArg
	socketGiven, listenGiven bool
	limits                   *serveLimits
	stderr                   io.Writer
}

type exportArg struct{ path, name string }

// validate checks the flags and turns the arguments into exports.
func (o *serveOptions) validate(args []string) error {
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usageErr("--tls-cert and --tls-key go together")
	}
	if o.tlsCA != "" && o.tlsCert == "" {
		return usageErr("--tls-ca needs --tls-cert and --tls-key")
	}
	if o.readOnly && o.undo {
		return usageErr("--read-only and --undo do not go together")
	}
	if err := o.limits.validate(); err != nil {
		return err
	}
	if err := o.checkExposure(); err != nil {
		return err
	}
	if len(args) == 0 {
		return usageErr("no image to serve")
	}
	// Paths the server listens on, mounts at and prints are absolute:
	// a relative one would print a URI that works only from this folder
	// and a socket 'vhd ctl' cannot find by path (/proc/net/unix shows
	// the path as bound).
	for _, p := range []*string{&o.socket, &o.control, &o.fuse} {
		if *p == "" {
			continue
		}
		var err error
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	seen := map[string]string{}
	for _, a := range args {
		e := parseExportArg(a)
		if e.name == "" {
			return usageErr("%q: export name is empty", a)
		}
		if prev, dup := seen[e.name]; dup {
			return usageErr("%s and %s would both be exported as %q; name one with IMAGE=NAME", prev, e.path, e.name)
		}
		seen[e.name] = e.path
		o.exports = append(o.exports, e)
	}
	return nil
}

// parseExportArg splits IMAGE=NAME. A path may itself hold '=': only a
// last '=' followed by no '/' starts a name.
func parseExportArg(a string) exportArg {
	if i := strings.LastIndexByte(a, '='); i > 0 && !strings.ContainsRune(a[i+1:], '/') {
		return exportArg{path: a[:i], name: a[i+1:]}
	}
	base := filepath.Base(a)
	return exportArg{path: a, name: strings.TrimSuffix(base, filepath.Ext(base))}
}

// serve opens the images, listens, prints the URIs and serves until ctx
// ends; the host (service.Host) then stops the clients, unmounts any
// FUSE mounts and flushes and closes the images, in that order.
func serve(ctx context.Context, o *serveOptions, cf *chainFlags, announce func([]string) error, log *slog.Logger) (err error) {
	srv := &nbdserve.Server{Logger: log}
	o.limits.apply(srv)
	if len(o.exports) == 1 {
		srv.Default = o.exports[0].name
	}
	h := service.New(service.Config{NBD: srv, Logger: log})
	// The second-signal watch lasts to the very end: closing the images
	// may take long.
	defer service.OnSecondSignal(func() { abandon(h, o) })()
	defer func() {
		if cerr := h.Close(); err == nil {
			err = cerr
		}
	}()
	for _, a := range o.exports {
		if err := addExport(ctx, h, a, o, cf, log); err != nil {
			return err
		}
	}
	if o.tlsCert != "" {
		if srv.TLSConfig, err = service.LoadTLS(o.tlsCert, o.tlsKey, o.tlsCA); err != nil {
			return err
		}
	}
	if err := listen(h, o); err != nil {
		return err
	}
	if err := listenControl(h, o, cf); err != nil {
		return err
	}
	if o.insecureTCP && o.tlsCA == "" {
		fmt.Fprintf(o.stderr, "vhd serve: warning: --insecure-tcp: clients of %s are not authenticated\n", o.listen)
	}
	lines := h.URIs()
	for _, name := range h.ExportNames() {
		if ex, _ := h.LookupExport(name); ex.Mountpoint != "" {
			lines = append(lines, "fuse:"+ex.Mountpoint)
			if err := saveServeMount(h, ex, o); err != nil {
				return err
			}
		}
	}
	if err := announce(append(lines, "control:"+h.ControlPath())); err != nil {
		return err
	}
	err = h.Run(ctx)
	printStopSummary(o.stderr, h.StopSummary())
	return err
}

// saveServeMount records a --fuse mount where 'vhd mount --list' finds
// it (service.MountState, Server "vhd serve"); the host removes the file
// when it stops.
func saveServeMount(h *service.Host, ex *service.Export, o *serveOptions) error {
	st := &service.MountState{
		Mountpoint: ex.Mountpoint, Mode: service.ModeNoUndo, PID: os.Getpid(), Started: time.Now().UTC(),
		Server: "vhd serve", Export: ex.Name, Control: h.ControlPath(),
	}
	for _, a := range o.exports {
		if a.name == ex.Name {
			st.Image, _ = filepath.Abs(a.path)
		}
	}
	switch {
	case o.readOnly:
		st.Mode = service.ModeReadOnly
	case o.undo:
		st.Mode, st.UndoDisk = service.ModeUndo, chains.UndoPath(st.Image)
	}
	return h.SaveState(st)
}

// printStopSummary says what stopping did, so the user who pressed
// Ctrl-C knows the clients were told and the images are safe.
func printStopSummary(w io.Writer, s service.StopSummary) {
	if s.Why == "" {
		return
	}
	parts := []string{fmt.Sprintf("disconnected %s", plural(int(s.Clients), "client"))}
	if len(s.Closed) > 0 {
		parts = append(parts, "flushed and closed "+strings.Join(s.Closed, ", "))
	}
	if s.FUSE > 0 {
		parts = append(parts, "unmounted "+plural(s.FUSE, "FUSE mount"))
	}
	if len(s.UndoRemoved) > 0 {
		parts = append(parts, "no changes: removed the undo disk "+strings.Join(s.UndoRemoved, ", "))
	}
	fmt.Fprintf(w, "vhd serve: %s: %s\n", s.Why, strings.Join(parts, "; "))
}

// listenControl sets up the control socket: the one given, else the
// default. Exports added through it open their chains with serve's chain
// flags and, when serve mounts several images under --fuse DIR, are
// mounted at DIR/NAME too.
func listenControl(h *service.Host, o *serveOptions, cf *chainFlags) error {
	path := o.control
	if path == "" {
		var err error
		if path, err = service.DefaultControlSocket(); err != nil {
			return fmt.Errorf("%w (or put the control socket elsewhere with --control PATH)", err)
		}
	} else if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	opts := service.ControlOptions{Chains: cf.options(false)}
	if o.fuse != "" && len(o.exports) > 1 {
		opts.FUSERoot = o.fuse
	}
	return h.ListenControl(path, opts)
}

// addExport opens one image and has the host serve it, over FUSE too
// with --fuse: at DIR for a single image, at DIR/NAME (made, and removed
// at the end) for several. The disks are the ones NBD serves, so both
// views share every write at once.
func addExport(ctx context.Context, h *service.Host, a exportArg, o *serveOptions, cf *chainFlags, log *slog.Logger) error {
	d, err := openExport(a.path, o, cf)
	if err != nil {
		return err
	}
	base := filepath.Base(a.path)
	opts := service.ExportOptions{Description: base, Undo: o.undo}
	if o.description != "" {
		opts.Description = o.description
	}
	if o.fuse != "" {
		dir := o.fuse
		if len(o.exports) > 1 {
			dir = filepath.Join(o.fuse, a.name)
		}
		opts.FUSE = &service.FUSEOptions{Dir: dir, MakeDir: len(o.exports) > 1, DetachBusy: true, Mount: vhdfs.Options{
			ReadOnly: o.readOnly, FsName: base, Logger: log,
			Info: map[string]any{"export": a.name, "image": base, "served_over": "nbd and fuse"},
		}}
	}
	if _, err := h.AddExport(ctx, a.name, d, opts); err != nil {
		d.Close()
		if opts.FUSE != nil {
			return fmt.Errorf("mount %s at %s: %w", a.name, opts.FUSE.Dir, err)
		}
		return err
	}
	return nil
}

// listen opens the listeners asked for: a unix socket (the one given,
// else the default) unless only --listen was given, and TCP with it.
func listen(h *service.Host, o *serveOptions) error {
	if o.socketGiven || !o.listenGiven {
		path := o.socket
		if path == "" {
			var err error
			if path, err = service.DefaultSocket(); err != nil {
				return err
			}
		}
		if err := h.ListenUnix(path); err != nil {
			return err
		}
	}
	if o.listenGiven {
		addr, err := service.TCPAddr(o.listen)
		if err != nil {
			return fmt.Errorf("--listen %w", err)
		}
		return h.ListenTCP(addr)
	}
	return nil
}

// abandon is the second SIGINT or SIGTERM: the user will not wait for
// clients. Flush what can be flushed, detach, exit.
func abandon(h *service.Host, o *serveOptions) {
	fmt.Fprintln(o.stderr, "vhd serve: second signal: flushing the images and exiting without waiting for clients")
	if err := h.Abandon(service.AbandonFlushTimeout); err != nil {
		fmt.Fprintf(o.stderr, "vhd serve: %v; writes since the last flush may be lost: run 'vhd check' on the images\n", err)
	}
	if o.atAbandon != nil {
		o.atAbandon()
	}
	os.Exit(exitFailed)
}

// openExport opens an image with its chain, or with its undo disk on top.
func openExport(path string, o *serveOptions, cf *chainFlags) (engine.Disk, error) {
	if o.undo {
		c, _, err := chains.OpenUndo(path, cf.options(false))
		return c, err
	}
	return chains.Open(path, cf.options(o.readOnly))
}

// plural is "1 client", "2 clients".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
