package hypervisor

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"

	"vhdkit/service"
)

// The run's control socket (Config.Control): the service host's, which
// serves the `vhd ctl` verbs on the guest's disks (exports disk0,
// disk1...: snapshot, merge, undo, views for a backup) and, through
// controlVM, the /v1/vm verbs on the guest itself. Exports added over it
// are served on the run's NBD socket, in the run's private folder: its
// owner (the only user the control socket answers) reaches both.

// listenControl sets up the control socket on host, if one is asked for.
func (vm *VM) listenControl(host *service.Host) error {
	if vm.cfg.Control == "" {
		return nil
	}
	return host.ListenControl(vm.cfg.Control, service.ControlOptions{Chains: vm.cfg.Chains, VM: controlVM{vm}})
}

// controlVM is the guest as the control socket's /v1/vm routes see it.
type controlVM struct{ vm *VM }

var _ service.VM = controlVM{}

func (c controlVM) Status(ctx context.Context) (service.VMStatus, error) {
	st, err := c.vm.Status(ctx)
	if err != nil {
		return service.VMStatus{}, vmError(err)
	}
	out := service.VMStatus{Name: st.Name, State: st.State, Accel: string(st.Accel), AccelNote: st.AccelNote,
		PID: st.PID, NBDSocket: c.vm.NBDSocket(), Disks: []service.VMDisk{}}
	for _, d := range st.Disks {
		out.Disks = append(out.Disks, service.VMDisk{Export: d.Export, Image: absPath(d.Image), ReadOnly: d.ReadOnly, Undo: d.Undo, Layers: absPaths(d.Layers)})
	}
	return out, nil
}

func (c controlVM) Pause(ctx context.Context) error     { return vmError(c.vm.Pause(ctx)) }
func (c controlVM) Resume(ctx context.Context) error    { return vmError(c.vm.Resume(ctx)) }
func (c controlVM) Powerdown(ctx context.Context) error { return vmError(c.vm.Powerdown(ctx)) }
func (c controlVM) Reset(ctx context.Context) error     { return vmError(c.vm.Reset(ctx)) }

func (c controlVM) Save(ctx context.Context, state string) (service.SavedState, error) {
	m, err := c.vm.Save(ctx, state)
	if err != nil {
		return service.SavedState{}, vmError(err)
	}
	out := service.SavedState{State: state, Saved: m.Saved, Disks: []service.SavedLayer{}}
	for _, d := range m.Disks {
		out.Disks = append(out.Disks, service.SavedLayer{Image: absPath(d.Image), Layer: d.Layer, ContinuedOn: absPath(d.ContinuedOn)})
	}
	return out, nil
}

func (c controlVM) DiskExports() []string {
	var names []string
	for i := range c.vm.disks {
		names = append(names, exportName(i))
	}
	return names
}

// vmError gives the runner's errors the control socket's codes.
func vmError(err error) error {
	code := ""
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotRunning):
		code = service.CodeNotRunning
	case errors.Is(err, fs.ErrExist):
		code = service.CodeExists
	case errors.Is(err, ErrCannotSave):
		code = service.CodeRefused
	default:
		return err
	}
	return &service.APIError{Code: code, Message: err.Error()}
}

func absPath(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func absPaths(ps []string) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, absPath(p))
	}
	return out
}
