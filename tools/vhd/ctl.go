package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"vhdkit/service"
)

var ctlCmd = &command{
	name:    "ctl",
	args:    "[--json] PATH|PID VERB [ARGS]",
	summary: "change what a running 'vhd serve' or 'vhd run' serves (live snapshot, merge, undo, exports), and act on a running guest",
	doc: `Talks to the control socket of a running 'vhd serve' or 'vhd run' (each
prints control:PATH; the defaults are $XDG_RUNTIME_DIR/vhdkit/
serve-PID.ctl and run-PID.ctl, in /run/vhdkit as root). PATH may also be
the server's pid or its NBD socket. The changes happen while clients
read and write: NBD clients, the FUSE files and a running guest see the
new layers at once, and no request fails.

  status                          exports (layers top first, read-only,
                                  undo, FUSE mount, NBD clients, requests,
                                  bytes, latency), jobs and their progress
  snapshot EXPORT NEWTOP          cut a new top layer NEWTOP; the old top
                                  becomes a read-only parent
  merge [--layer FILE] EXPORT     fold the top layer into its parent (a
                                  live commit), or with --layer a frozen
                                  layer into its parent; a job, followed
                                  with a progress bar on a terminal
  undo commit|discard EXPORT      an export served with --undo: fold its
                                  undo disk into the image (a job), or drop
                                  it; either way writes go on to a fresh one
  add NAME IMAGE [--read-only | --undo] [--fuse DIR]
                                  open IMAGE (with its chain) and export it
  add NAME --view-of EXPORT [--layer FILE] [--fuse DIR]
                                  export a frozen layer of EXPORT read-only
                                  (by default the newest, under the top):
                                  the point a backup reads, which does not
                                  change while EXPORT is written
  remove NAME                     stop serving NAME: its clients' requests
                                  are answered and flushed, then it closes
  wait JOB                        follow a job to its end
  cancel JOB                      stop a job

The guest of a 'vhd run' (its disks are the exports disk0, disk1...,
which every verb above acts on, except remove):

  vm status                       the guest's state, accelerator, QEMU
                                  pid, NBD socket and disks
  vm pause | vm resume            stop the guest's CPUs (its disks drained
                                  and flushed), and run them again
  vm powerdown                    press its ACPI power button
  vm reset                        press its reset button
  vm save STATE                   save memory and disks of one paused
                                  moment into the folder STATE; the guest
                                  runs on, on new tops ('vhd run
                                  --restore STATE' continues from there)

One live operation runs on an export at a time: another is refused as
busy (exit 1), naming the job that runs. A merge goes on if vhd ctl is
interrupted or --no-wait is given ('vhd ctl PATH wait JOB' follows it);
cancel stops it half-way: the export keeps serving exactly what it
served, and the merge is finished by 'vhd merge LAYER' once the export
is removed or the server stopped. Exports added are mounted over FUSE
at DIR/NAME when vhd serve mounts several images under --fuse DIR, or
at --fuse DIR.

Paths are sent as absolute paths; the server opens them, as the user
who runs it (only that user may use the socket). --json prints the
server's JSON reply (docs/CLI.md has every shape); errors go to stderr
as everywhere, with exit status 1 (2 for a bad command line).`,
	setup: func(fs *pflag.FlagSet) runFunc {
		o := &ctlOptions{}
		fs.BoolVar(&o.json, "json", false, "print the server's reply as JSON")
		fs.StringVar(&o.layer, "layer", "", "merge, add --view-of: this layer (a file of the chain) instead of the default")
		fs.StringVar(&o.viewOf, "view-of", "", "add: export a frozen layer of this export, read-only")
		fs.BoolVar(&o.readOnly, "read-only", false, "add: open the image read-only")
		fs.BoolVar(&o.undo, "undo", false, "add: send writes to the image's undo disk (.vud)")
		fs.StringVar(&o.fuse, "fuse", "", "add: also mount the export over FUSE at this folder")
		fs.BoolVar(&o.noWait, "no-wait", false, "merge, undo commit, cancel: print the job and return without waiting for its end")
		fs.BoolVar(&o.noProgress, "no-progress", false, "never show a progress bar")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) < 2 {
				return usageErr("want the control socket (PATH or PID) and a verb: status, snapshot, merge, undo, add, remove, wait, cancel or vm")
			}
			o.changed = fs.Changed
			v, ok := ctlVerbs[args[1]]
			if _, first := ctlVerbs[args[0]]; !ok && first {
				return usageErr("the control socket comes first, then the verb: vhd ctl %s %s", args[1], strings.Join(append([]string{args[0]}, args[2:]...), " "))
			}
			if !ok {
				return usageErr("%q is not a ctl verb: want status, snapshot, merge, undo, add, remove, wait, cancel or vm", args[1])
			}
			if err := o.checkFlags(args[1], v.flags); err != nil {
				return err
			}
			x, err := newCtlRun(e, o, args[0])
			if err != nil {
				return err
			}
			return v.run(ctx, x, args[2:])
		}
	},
}

// ctlOptions are vhd ctl's flags.
type ctlOptions struct {
	json, readOnly, undo, noWait, noProgress bool
	layer, viewOf, fuse                      string
	changed                                  func(string) bool
}

// ctlVerb is one verb: what it runs and the flags it takes (besides
// --json and --no-progress, which every verb takes).
type ctlVerb struct {
	run   func(ctx context.Context, x *ctlRun, args []string) error
	flags []string
}

var ctlVerbs map[string]ctlVerb

func init() {
	ctlVerbs = map[string]ctlVerb{
		"status":   {ctlStatus, nil},
		"snapshot": {ctlSnapshot, nil},
		"merge":    {ctlMerge, []string{"layer", "no-wait"}},
		"undo":     {ctlUndo, []string{"no-wait"}},
		"add":      {ctlAdd, []string{"layer", "view-of", "read-only", "undo", "fuse"}},
		"remove":   {ctlRemove, nil},
		"wait":     {ctlWait, nil},
		"cancel":   {ctlCancel, []string{"no-wait"}},
		"vm":       {ctlVM, nil},
	}
}

// checkFlags refuses a flag the verb does not take.
func (o *ctlOptions) checkFlags(verb string, allowed []string) error {
	for _, f := range []string{"layer", "view-of", "read-only", "undo", "fuse", "no-wait"} {
		if o.changed(f) && !slices.Contains(allowed, f) {
			return usageErr("--%s does not go with %s", f, verb)
		}
	}
	return nil
}

// ctlRun is one vhd ctl call: where its output goes, the client, and
// the socket it talks to.
type ctlRun struct {
	e      *env
	o      *ctlOptions
	arg    string // PATH or PID as given, for messages
	path   string
	client *service.ControlClient
	// mayBeNBD: the path was given, not found from a pid, so it may be
	// an NBD socket (resolved on the first failure: call).
	mayBeNBD bool
	// cancelling: the job followed is being cancelled (vhd ctl cancel).
	cancelling bool
}

func newCtlRun(e *env, o *ctlOptions, arg string) (*ctlRun, error) {
	path, err := service.FindControl(arg)
	if err != nil {
		return nil, err
	}
	return &ctlRun{e: e, o: o, arg: arg, path: path, client: service.NewControlClient(path), mayBeNBD: path == arg}, nil
}

// call runs fn against the server. If the path turns out to be an NBD
// socket (the failure is not the server's answer, and the socket greets
// like an NBD server), fn is run again against that server's control
// socket: nothing reached a control socket the first time.
func (x *ctlRun) call(fn func(c *service.ControlClient) error) error {
	err := fn(x.client)
	var ce *service.ControlError
	if err == nil || errors.As(err, &ce) || !x.mayBeNBD {
		return err
	}
	x.mayBeNBD = false
	if !service.SpeaksNBD(x.path) {
		return err
	}
	path, ferr := service.ControlOfNBDSocket(x.path)
	if ferr != nil {
		return fmt.Errorf("%s is an NBD socket, and its server's control socket cannot be found (%v): give the control socket (vhd serve prints control:PATH)", x.path, ferr)
	}
	x.path, x.client = path, service.NewControlClient(path)
	return fn(x.client)
}

// abs makes a path the user typed absolute: the server's folder is not
// the user's.
func abs(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return a, nil
}

// serverError turns an error reply into the error vhd ctl reports, with
// the PATH the messages mention filled in.
func (x *ctlRun) serverError(err error) error {
	var ce *service.ControlError
	if errors.As(err, &ce) {
		return errors.New(strings.ReplaceAll(ce.Message, "vhd ctl PATH", "vhd ctl "+x.arg))
	}
	return err
}
