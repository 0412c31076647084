package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"vhdkit/service"
)

// vhd ctl PATH vm VERB: the guest of a vhd run.
//
//	vhd ctl PATH vm status
//	guest web: running under tcg (QEMU pid 4321)
//	  nbd socket /tmp/vhd-run-123/nbd.sock
//	  disk0 (/srv/web.vhd): read-write
//	    layers, top first:
//	      /srv/web.vhd

// vmVerbs are the guest's verbs besides status and save, with what the
// user is told once done.
var vmVerbs = map[string]string{
	"pause":     "paused: its CPUs are stopped and its disks drained and flushed ('vm resume' runs it again)",
	"resume":    "running again",
	"powerdown": "had its ACPI power button pressed: vhd run exits 0 once it powers off",
	"reset":     "reset, as by the reset button: what it had not flushed is lost",
}

func ctlVM(ctx context.Context, x *ctlRun, args []string) error {
	if len(args) == 0 {
		return usageErr("vm: want status, pause, resume, powerdown, reset or save STATE")
	}
	verb, args := args[0], args[1:]
	switch {
	case verb == "status":
		return x.vmStatus(ctx, args)
	case verb == "save":
		return x.vmSave(ctx, args)
	case vmVerbs[verb] != "":
		return x.vmVerb(ctx, verb, args)
	}
	return usageErr("vm %q: want status, pause, resume, powerdown, reset or save STATE", verb)
}

func (x *ctlRun) vmStatus(ctx context.Context, args []string) error {
	if err := wantArgs(args); err != nil {
		return err
	}
	var st *service.VMStatus
	if err := x.call(func(c *service.ControlClient) (err error) { st, err = c.VM(ctx); return }); err != nil {
		return x.serverError(err)
	}
	if x.o.json {
		return writeJSON(x.e, st)
	}
	printVM(x.e.stdout, st)
	return nil
}

func (x *ctlRun) vmVerb(ctx context.Context, verb string, args []string) error {
	if err := wantArgs(args); err != nil {
		return err
	}
	var st *service.VMStatus
	if err := x.call(func(c *service.ControlClient) (err error) { st, err = c.VMVerb(ctx, verb); return }); err != nil {
		return x.serverError(err)
	}
	if x.o.json {
		return writeJSON(x.e, st)
	}
	fmt.Fprintf(x.e.stdout, "guest %s %s\n", st.Name, vmVerbs[verb])
	return nil
}

func (x *ctlRun) vmSave(ctx context.Context, args []string) error {
	if err := wantArgs(args, "STATE"); err != nil {
		return err
	}
	state, err := abs(args[0])
	if err != nil {
		return err
	}
	var saved *service.SavedState
	if err := x.call(func(c *service.ControlClient) (err error) { saved, err = c.VMSave(ctx, state); return }); err != nil {
		return x.serverError(err)
	}
	if x.o.json {
		return writeJSON(x.e, saved)
	}
	fmt.Fprintf(x.e.stdout, "guest saved to %s: 'vhd run --restore %s' continues it from this moment\n", saved.State, saved.State)
	for _, d := range saved.Disks {
		if d.ContinuedOn == "" {
			fmt.Fprintf(x.e.stdout, "  %s: read-only, saved as it is\n", d.Image)
			continue
		}
		fmt.Fprintf(x.e.stdout, "  %s: frozen in %s; the running guest writes to %s now\n", d.Image, d.Layer, d.ContinuedOn)
	}
	return nil
}

func printVM(w io.Writer, st *service.VMStatus) {
	how := st.State
	if st.PID != 0 {
		how += fmt.Sprintf(" under %s (QEMU pid %d)", st.Accel, st.PID)
	}
	if st.AccelNote != "" {
		how += ": " + st.AccelNote
	}
	fmt.Fprintf(w, "guest %s: %s\n", st.Name, how)
	if st.NBDSocket != "" {
		fmt.Fprintf(w, "  nbd socket %s\n", st.NBDSocket)
	}
	for _, d := range st.Disks {
		traits := []string{"read-write"}
		if d.ReadOnly {
			traits[0] = "read-only"
		}
		if d.Undo {
			traits = append(traits, "on an undo disk")
		}
		fmt.Fprintf(w, "  %s (%s): %s\n", d.Export, d.Image, strings.Join(traits, ", "))
		if len(d.Layers) > 0 {
			fmt.Fprintln(w, "    layers, top first:")
			for _, l := range d.Layers {
				fmt.Fprintf(w, "      %s\n", l)
			}
		}
	}
}
