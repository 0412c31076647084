package service

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// The guest's verbs: a `vhd run` serves its control socket with a VM
// (ControlOptions.VM), and these routes act on it; a host without one
// (vhd serve) answers them 404 no_vm.
//
//	GET  /v1/vm             VMStatus
//	POST /v1/vm/pause       -> VMStatus (the guest's CPUs stop)
//	POST /v1/vm/resume      -> VMStatus
//	POST /v1/vm/powerdown   -> VMStatus (the ACPI power button)
//	POST /v1/vm/reset       -> VMStatus (the reset button)
//	POST /v1/vm/save        SaveRequest -> SavedState
//
// The exports of the guest's disks are the host's like any other
// (snapshot, merge, undo, add --view-of), but they are not removed over
// the socket: the guest would lose its disk.

// VM is the guest a control socket's /v1/vm routes act on. Errors may be
// *APIError to choose the code; others are classified as usual.
type VM interface {
	// Status describes the guest and its disks.
	Status(ctx context.Context) (VMStatus, error)
	// Pause, Resume, Powerdown and Reset press the guest's buttons.
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	Powerdown(ctx context.Context) error
	Reset(ctx context.Context) error
	// Save checkpoints the guest's memory and disks into the folder
	// state (absolute, not existing).
	Save(ctx context.Context, state string) (SavedState, error)
	// DiskExports names the exports of the guest's own disks.
	DiskExports() []string
}

// CodeNoVM is the error code of a /v1/vm route on a host without a
// guest (404).
const CodeNoVM = "no_vm"

// saveWait bounds a save: QEMU writes the guest's memory while it is
// paused (a few seconds a GiB), and the reply waits for the end.
const saveWait = 15 * time.Minute

// VMStatus is GET /v1/vm.
type VMStatus struct {
	Name string `json:"name"`
	// State is QEMU's run state: running, paused, postmigrate (paused
	// after a save), inmigrate (restoring), shutdown...; "stopped" when
	// no QEMU runs (starting, or ended).
	State     string `json:"state"`
	Accel     string `json:"accel"`
	AccelNote string `json:"accel_note"`
	// PID is QEMU's, 0 when none runs.
	PID int `json:"pid"`
	// NBDSocket is the socket the disks (and exports added) are served
	// on, in the run's private folder; "" when none.
	NBDSocket string   `json:"nbd_socket"`
	Disks     []VMDisk `json:"disks"`
}

// VMDisk is one disk of the guest, in attachment order (/dev/vda...).
type VMDisk struct {
	Export   string   `json:"export"`
	Image    string   `json:"image"`
	ReadOnly bool     `json:"read_only"`
	Undo     bool     `json:"undo"`
	Layers   []string `json:"layers"` // top first; [] when not running
}

// SaveRequest is POST /v1/vm/save.
type SaveRequest struct {
	// State is the folder to save into: absolute, not existing.
	State string `json:"state"`
}

// SavedState is the reply to a save: what `vhd run --restore STATE`
// continues from.
type SavedState struct {
	State string       `json:"state"`
	Saved time.Time    `json:"saved"`
	Disks []SavedLayer `json:"disks"`
}

// SavedLayer is one disk of a saved state.
type SavedLayer struct {
	Image string `json:"image"`
	// Layer holds the disk at the saved moment (frozen from then on).
	Layer string `json:"layer"`
	// ContinuedOn is the new top the running guest writes to since; ""
	// for a read-only disk.
	ContinuedOn string `json:"continued_on"`
}

func noVM() *APIError {
	return apiErr(CodeNoVM, "this control socket runs no guest (it is a vhd serve's): the vm verbs are for 'vhd run' control sockets")
}

// vmRoutes adds the /v1/vm routes.
func (cs *controlServer) vmRoutes(mux *http.ServeMux) {
	mux.Handle("/v1/vm", cs.serve(map[string]handlerFunc{"GET": cs.getVM}))
	mux.Handle("/v1/vm/save", longReply(cs.serve(map[string]handlerFunc{"POST": cs.postVMSave}), saveWait+time.Minute))
	mux.Handle("/v1/vm/{verb}", cs.serve(map[string]handlerFunc{"POST": cs.postVMVerb}))
}

// longReply lets h's reply take up to d, beyond the server's write
// timeout.
func longReply(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
		h.ServeHTTP(w, r)
	})
}

func (cs *controlServer) getVM(r *http.Request) (reply, *APIError) {
	if cs.opts.VM == nil {
		return reply{}, noVM()
	}
	st, err := cs.opts.VM.Status(r.Context())
	if err != nil {
		return reply{}, classify(err)
	}
	return ok(st)
}

func (cs *controlServer) postVMVerb(r *http.Request) (reply, *APIError) {
	var none struct{}
	if aerr := decodeBody(r.Body, &none); aerr != nil {
		return reply{}, aerr
	}
	vm := cs.opts.VM
	if vm == nil {
		return reply{}, noVM()
	}
	verbs := map[string]func(context.Context) error{"pause": vm.Pause, "resume": vm.Resume, "powerdown": vm.Powerdown, "reset": vm.Reset}
	verb := r.PathValue("verb")
	fn, found := verbs[verb]
	if !found {
		return reply{}, apiErr(CodeNotFound, fmt.Sprintf("vm %q: want pause, resume, powerdown, reset or save (GET /v1/vm for the status)", verb))
	}
	ctx := detached(r)
	if err := fn(ctx); err != nil {
		return reply{}, classify(err)
	}
	cs.log.Info("vhd: vm "+verb, "guest", vm.DiskExports())
	st, err := vm.Status(ctx)
	if err != nil {
		return reply{}, classify(err)
	}
	return ok(st)
}

// postVMSave saves the guest with every disk export claimed, so no live
// operation of the socket's runs on a disk while its snapshot is cut.
func (cs *controlServer) postVMSave(r *http.Request) (reply, *APIError) {
	var req SaveRequest
	if aerr := decodeBody(r.Body, &req); aerr != nil {
		return reply{}, aerr
	}
	vm := cs.opts.VM
	if vm == nil {
		return reply{}, noVM()
	}
	state, aerr := absFile("state", req.State, false)
	if aerr != nil {
		return reply{}, aerr
	}
	release, aerr := cs.claimAll(vm.DiskExports(), "a save of the guest")
	if aerr != nil {
		return reply{}, aerr
	}
	defer release()
	ctx, cancel := context.WithTimeout(detached(r), saveWait)
	defer cancel()
	saved, err := vm.Save(ctx, state)
	if err != nil {
		return reply{}, classify(err)
	}
	cs.log.Info("vhd: guest saved", "state", state)
	return ok(saved)
}

// claimAll claims every export named (those served), or none.
func (cs *controlServer) claimAll(names []string, what string) (release func(), aerr *APIError) {
	var releases []func()
	release = func() {
		for _, r := range releases {
			r()
		}
	}
	for _, name := range names {
		ex, found := cs.host.LookupExport(name)
		if !found {
			continue
		}
		r, aerr := cs.claim(ex, what)
		if aerr != nil {
			release()
			return nil, aerr
		}
		releases = append(releases, r)
	}
	return release, nil
}

// refuseGuestDisk refuses to remove an export that is one of the
// guest's disks.
func (cs *controlServer) refuseGuestDisk(name string) *APIError {
	if cs.opts.VM == nil {
		return nil
	}
	for _, d := range cs.opts.VM.DiskExports() {
		if d == name {
			return apiErr(CodeRefused, fmt.Sprintf("export %q is a disk of the running guest: it goes when the guest powers off ('vhd ctl PATH vm powerdown')", name))
		}
	}
	return nil
}

// DefaultRunControlSocket is where vhd run's control socket goes when
// told nothing: beside vhd serve's (DefaultControlSocket), named
// run-PID.ctl.
func DefaultRunControlSocket() (string, error) {
	dir := RuntimeDir()
	if err := privateDir(dir); err != nil {
		return "", err
	}
	return runControlSocketIn(dir, os.Getpid()), nil
}

func runControlSocketIn(dir string, pid int) string {
	return filepath.Join(dir, fmt.Sprintf("run-%d.ctl", pid))
}
