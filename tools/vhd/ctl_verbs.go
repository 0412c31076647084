package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"vhdkit/service"
)

// Each vhd ctl verb: check its arguments, make paths absolute, one
// request (through ctlRun.call), print the reply.

func ctlStatus(ctx context.Context, x *ctlRun, args []string) error {
	if err := wantArgs(args); err != nil {
		return err
	}
	var st *service.Status
	if err := x.call(func(c *service.ControlClient) (err error) { st, err = c.Status(ctx); return }); err != nil {
		return x.serverError(err)
	}
	if x.o.json {
		return writeJSON(x.e, st)
	}
	printStatus(x.e.stdout, st)
	return nil
}

func ctlSnapshot(ctx context.Context, x *ctlRun, args []string) error {
	if err := wantArgs(args, "EXPORT", "NEWTOP"); err != nil {
		return err
	}
	newTop, err := abs(args[1])
	if err != nil {
		return err
	}
	name, err := x.exportName(ctx, args[0])
	if err != nil {
		return err
	}
	var st *service.ExportStatus
	if err := x.call(func(c *service.ControlClient) (err error) { st, err = c.Snapshot(ctx, name, newTop); return }); err != nil {
		return x.serverError(err)
	}
	if x.o.json {
		return writeJSON(x.e, st)
	}
	fmt.Fprintf(x.e.stdout, "export %s: writes go to %s now; the layer under it is frozen\n", st.Name, newTop)
	printLayers(x.e.stdout, st.Layers)
	return nil
}

func ctlMerge(ctx context.Context, x *ctlRun, args []string) error {
	if err := wantArgs(args, "EXPORT"); err != nil {
		return err
	}
	layer, err := abs(x.o.layer)
	if err != nil {
		return err
	}
	name, err := x.exportName(ctx, args[0])
	if err != nil {
		return err
	}
	var j *service.Job
	if err := x.call(func(c *service.ControlClient) (err error) { j, err = c.Merge(ctx, name, layer); return }); err != nil {
		return x.serverError(err)
	}
	return x.follow(ctx, j)
}

func ctlUndo(ctx context.Context, x *ctlRun, args []string) error {
	if err := wantArgs(args, "commit|discard", "EXPORT"); err != nil {
		return err
	}
	name, err := x.exportName(ctx, args[1])
	if err != nil {
		return err
	}
	args[1] = name
	switch args[0] {
	case "commit":
		var j *service.Job
		if err := x.call(func(c *service.ControlClient) (err error) { j, err = c.UndoCommit(ctx, args[1]); return }); err != nil {
			return x.serverError(err)
		}
		return x.follow(ctx, j)
	case "discard":
		if x.o.changed("no-wait") {
			return usageErr("--no-wait goes with undo commit, not discard (which is quick)")
		}
		var st *service.ExportStatus
		if err := x.call(func(c *service.ControlClient) (err error) { st, err = c.UndoDiscard(ctx, args[1]); return }); err != nil {
			return x.serverError(err)
		}
		if x.o.json {
			return writeJSON(x.e, st)
		}
		fmt.Fprintf(x.e.stdout, "export %s: the undo disk's changes are dropped; it reads as %s again, and writes go to a fresh undo disk\n", st.Name, imageUnder(st))
		return nil
	}
	return usageErr("undo %q: want commit or discard", args[0])
}

func ctlAdd(ctx context.Context, x *ctlRun, args []string) error {
	req, err := x.addRequest(args)
	if err != nil {
		return err
	}
	var st *service.ExportStatus
	if err := x.call(func(c *service.ControlClient) (err error) { st, err = c.Add(ctx, req); return }); err != nil {
		return x.serverError(err)
	}
	if x.o.json {
		return writeJSON(x.e, st)
	}
	for _, u := range st.URIs {
		fmt.Fprintln(x.e.stdout, u)
	}
	if st.FUSE != "" {
		fmt.Fprintf(x.e.stdout, "fuse:%s\n", st.FUSE)
	}
	return nil
}

// addRequest turns add's arguments and flags into a request.
func (x *ctlRun) addRequest(args []string) (service.AddRequest, error) {
	o := x.o
	var req service.AddRequest
	var err error
	if o.viewOf != "" {
		if err := wantArgs(args, "NAME"); err != nil {
			return req, err
		}
		if o.readOnly || o.undo {
			return req, usageErr("--view-of exports read-only already: no --read-only or --undo")
		}
		req = service.AddRequest{Name: args[0], ViewOf: o.viewOf}
		req.Layer, err = abs(o.layer)
	} else {
		if err := wantArgs(args, "NAME", "IMAGE"); err != nil {
			return req, err
		}
		switch {
		case o.layer != "":
			return req, usageErr("--layer goes with --view-of (a layer of a served export)")
		case o.readOnly && o.undo:
			return req, usageErr("--read-only and --undo do not go together")
		}
		req = service.AddRequest{Name: args[0], ReadOnly: o.readOnly, Undo: o.undo}
		req.Image, err = abs(args[1])
	}
	if err == nil {
		req.FUSE, err = abs(o.fuse)
	}
	return req, err
}

func ctlRemove(ctx context.Context, x *ctlRun, args []string) error {
	if err := wantArgs(args, "NAME"); err != nil {
		return err
	}
	var r *service.Removed
	if err := x.call(func(c *service.ControlClient) (err error) { r, err = c.Remove(ctx, args[0]); return }); err != nil {
		return x.serverError(err)
	}
	if x.o.json {
		return writeJSON(x.e, r)
	}
	fmt.Fprintf(x.e.stdout, "export %s removed: its clients were answered and disconnected, and it is closed\n", r.Removed)
	return nil
}

func ctlWait(ctx context.Context, x *ctlRun, args []string) error {
	id, err := jobArg(args)
	if err != nil {
		return err
	}
	var j *service.Job
	if err := x.call(func(c *service.ControlClient) (err error) { j, err = c.Job(ctx, id, 0); return }); err != nil {
		return x.serverError(err)
	}
	return x.follow(ctx, j)
}

func ctlCancel(ctx context.Context, x *ctlRun, args []string) error {
	id, err := jobArg(args)
	if err != nil {
		return err
	}
	var j *service.Job
	if err := x.call(func(c *service.ControlClient) (err error) { j, err = c.Cancel(ctx, id); return }); err != nil {
		return x.serverError(err)
	}
	x.cancelling = true
	return x.follow(ctx, j)
}

func jobArg(args []string) (int64, error) {
	if err := wantArgs(args, "JOB"); err != nil {
		return 0, err
	}
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || id <= 0 {
		return 0, usageErr("job %q: want the job's number ('vhd ctl PATH status' lists them)", args[0])
	}
	return id, nil
}

// exportName is the export arg names: arg itself, or, when it is a path
// to an image (a user who typed the file the server serves), the export
// whose chain holds that file.
func (x *ctlRun) exportName(ctx context.Context, arg string) (string, error) {
	if !strings.ContainsRune(arg, filepath.Separator) && !isImagePath(arg) {
		return arg, nil
	}
	want, err := filepath.Abs(arg)
	if err != nil {
		return "", err
	}
	want = realPath(want)
	var st *service.Status
	if err := x.call(func(c *service.ControlClient) (err error) { st, err = c.Status(ctx); return }); err != nil {
		return "", x.serverError(err)
	}
	for _, ex := range st.Exports {
		if ex.Name == arg {
			return arg, nil // an export named like a file
		}
	}
	for _, ex := range st.Exports {
		for _, l := range ex.Layers {
			if realPath(l) == want {
				return ex.Name, nil
			}
		}
	}
	return "", fmt.Errorf("no export of the server serves %s: ctl verbs take an export's name ('vhd ctl %s status' lists them)", arg, x.arg)
}

func isImagePath(p string) bool {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".vhd", ".avhd", ".vud":
		return true
	}
	return false
}

// realPath is p with its symlinks resolved, or p when it cannot be.
func realPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}
