package service

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"vhdkit/chains"
	"vhdkit/engine"
)

// The /v1/vm routes. The guest itself (QEMU) is the runner's, tested in
// hypervisor and tools/vhd with real guests; here a host with a control
// socket routes to a VM that records the verbs, so what the routes add
// (codes, claims, the refusal to remove a guest's disk) is tested
// alone.

// recordingVM records the verbs it gets; its Save waits for release.
type recordingVM struct {
	mu      sync.Mutex
	verbs   []string
	saving  chan struct{} // closed when Save starts
	release chan struct{} // Save returns once it is closed
}

func (v *recordingVM) record(verb string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.verbs = append(v.verbs, verb)
	if verb == "reset" {
		return &APIError{Code: CodeNotRunning, Message: "reset: the guest is not running"}
	}
	return nil
}

func (v *recordingVM) Status(ctx context.Context) (VMStatus, error) {
	return VMStatus{Name: "g", State: "running", Disks: []VMDisk{{Export: "disk", Layers: []string{}}}}, nil
}
func (v *recordingVM) Pause(ctx context.Context) error     { return v.record("pause") }
func (v *recordingVM) Resume(ctx context.Context) error    { return v.record("resume") }
func (v *recordingVM) Powerdown(ctx context.Context) error { return v.record("powerdown") }
func (v *recordingVM) Reset(ctx context.Context) error     { return v.record("reset") }
func (v *recordingVM) DiskExports() []string               { return []string{"disk"} }

func (v *recordingVM) Save(ctx context.Context, state string) (SavedState, error) {
	v.record("save " + state)
	close(v.saving)
	<-v.release
	return SavedState{State: state, Disks: []SavedLayer{}}, nil
}

// vmHost serves a fresh image as export "disk" with a control socket
// whose VM is vm.
func vmHost(t *testing.T, vm VM) (image, ctl string, stop func() error) {
	t.Helper()
	dir := t.TempDir()
	image = filepath.Join(dir, "disk.vhd")
	img, err := engine.Create(image, engine.CreateOptions{Type: engine.TypeDynamic, Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	c, err := chains.Open(image, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := New(Config{})
	if _, err := h.AddExport(context.Background(), "disk", c, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	ctl = filepath.Join(dir, "ctl.sock")
	if err := h.ListenControl(ctl, ControlOptions{VM: vm}); err != nil {
		t.Fatal(err)
	}
	return image, ctl, runHost(t, h)
}

// TestControlNoVM: a host with no guest (vhd serve's) answers every
// /v1/vm route 404 no_vm, saying what the verbs are for.
func TestControlNoVM(t *testing.T) {
	_, _, ctl, _ := controlHost(t, 8<<20)
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/vm", ""}, {"POST", "/v1/vm/pause", ""}, {"POST", "/v1/vm/powerdown", "{}"},
		{"POST", "/v1/vm/save", `{"state": "/tmp/s"}`},
	} {
		if status, code := raw(t, ctl, r.method, r.path, r.body); status != http.StatusNotFound || code != CodeNoVM {
			t.Errorf("%s %s: %d %s, want 404 no_vm", r.method, r.path, status, code)
		}
	}
	_, err := NewControlClient(ctl).VM(context.Background())
	var ce *ControlError
	if !errors.As(err, &ce) || ce.Code != CodeNoVM {
		t.Fatalf("the client's VM on a serve host: %v", err)
	}
}

// TestControlVMRoutes: each verb reaches the VM and answers its status;
// an unknown verb, a relative state and a wrong method are refused; a
// VM's own error code passes through; a save holds every disk export
// (a snapshot meanwhile is busy); a guest's disk is never removed.
func TestControlVMRoutes(t *testing.T) {
	vm := &recordingVM{saving: make(chan struct{}), release: make(chan struct{})}
	image, ctl, stop := vmHost(t, vm)
	c := NewControlClient(ctl)
	ctx := context.Background()
	for _, verb := range []string{"pause", "resume", "powerdown"} {
		st, err := c.VMVerb(ctx, verb)
		if err != nil || st.Name != "g" || st.State != "running" {
			t.Fatalf("vm %s: %+v, %v", verb, st, err)
		}
	}
	for _, r := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/vm/reset", "", http.StatusConflict, CodeNotRunning},
		{"POST", "/v1/vm/hibernate", "", http.StatusNotFound, CodeNotFound},
		{"GET", "/v1/vm/pause", "", http.StatusMethodNotAllowed, CodeMethod},
		{"POST", "/v1/vm", "", http.StatusMethodNotAllowed, CodeMethod},
		{"POST", "/v1/vm/save", `{"state": "relative"}`, http.StatusBadRequest, CodeBadRequest},
		{"POST", "/v1/vm/save", `{}`, http.StatusBadRequest, CodeBadRequest},
		{"POST", "/v1/vm/pause", `{"x": 1}`, http.StatusBadRequest, CodeBadRequest},
		{"DELETE", "/v1/exports/disk", "", http.StatusConflict, CodeRefused},
	} {
		if status, code := raw(t, ctl, r.method, r.path, r.body); status != r.status || code != r.code {
			t.Errorf("%s %s %s: %d %s, want %d %s", r.method, r.path, r.body, status, code, r.status, r.code)
		}
	}

	state := filepath.Join(t.TempDir(), "state")
	saved := make(chan error, 1)
	go func() {
		_, err := c.VMSave(ctx, state)
		saved <- err
	}()
	select {
	case <-vm.saving:
	case <-time.After(10 * time.Second):
		t.Fatal("the save did not reach the VM")
	}
	_, err := c.Snapshot(ctx, "disk", filepath.Join(filepath.Dir(image), "early.vhd"))
	var ce *ControlError
	if !errors.As(err, &ce) || ce.Code != CodeBusy {
		t.Fatalf("a snapshot during a save: %v", err)
	}
	close(vm.release)
	if err := <-saved; err != nil {
		t.Fatal(err)
	}
	vm.mu.Lock()
	got := fmt.Sprint(vm.verbs)
	vm.mu.Unlock()
	if want := fmt.Sprint([]string{"pause", "resume", "powerdown", "reset", "save " + state}); got != want {
		t.Fatalf("the VM got %s, want %s", got, want)
	}
	top := filepath.Join(filepath.Dir(image), "top.vhd")
	if _, err := c.Snapshot(ctx, "disk", top); err != nil {
		t.Fatalf("a snapshot after the save: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	released(t, top)
	rep, err := engine.CheckPath(image, engine.CheckOptions{Bitmaps: true})
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("check %s: %v %v", image, err, rep.Problems)
	}
}
