package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"vhdkit/chains"
)

// The control socket: HTTP with JSON on a unix socket, one per serving
// process (vhd serve --control), through which `vhd ctl` (and the
// runner) changes what the host serves while it serves it: live
// snapshots, merges and undo commits of the exports' chains, exports
// added and removed, read-only views of frozen layers. Its routes and
// JSON shapes are in control_api.go and control_json.go, documented in
// docs/CLI.md.
//
// Who may use it: the socket file is made with mode 0600 (see
// listenControl) and every connection's peer uid is checked against
// ours (control_peer.go).
//
// One live operation per export at a time: a second one is answered
// "busy" (409) at once, naming what runs, rather than queued behind it
// unseen. Merges and undo commits run as jobs (control_jobs.go): the
// request returns the job at once, and the job goes on whatever happens
// to the connection that started it, until it ends or is cancelled.

// ControlOptions set up a host's control socket.
type ControlOptions struct {
	// Chains are the options images added over the socket are opened
	// with (parent folders, depth...); ReadOnly comes from each request.
	Chains chains.Options
	// FUSERoot, if set, is a folder exports added over the socket are
	// mounted in over FUSE, at FUSERoot/NAME (made, and removed when
	// they go), unless the request names a mount point.
	FUSERoot string
	// VM, if set, is the guest the /v1/vm routes act on (vhd run's);
	// without one they answer no_vm (control_vm.go).
	VM VM
}

// controlServer serves a host's control socket.
type controlServer struct {
	host *Host
	path string
	opts ControlOptions
	l    *peerListener
	srv  *http.Server
	jobs *jobTable
	log  *slog.Logger

	mu sync.Mutex
	// busy maps an export to the live operation running on it (what,
	// and its job's id if it is one). Guarded by mu.
	busy map[string]busyOp
	// backups are the backups running (control_backup.go).
	backups backupTable

	stopOnce sync.Once
}

type busyOp struct {
	what string
	job  int64
}

// ListenControl makes the host serve its control socket at path (mode
// 0600; a stale socket there is replaced, anything else refused) while
// Run runs. Run stops it first when it ends: no request is taken any
// more, running jobs are cancelled and waited for. Teardown removes the
// file. Only before Run, and once.
func (h *Host) ListenControl(path string, opts ControlOptions) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.phase != setup:
		return errors.New("service: the control socket is set up before Run")
	case h.control != nil:
		return errors.New("service: the host has a control socket already")
	}
	l, err := listenControl(path)
	if err != nil {
		return err
	}
	cs := &controlServer{host: h, path: path, opts: opts, log: h.log, busy: map[string]busyOp{}}
	cs.l = &peerListener{UnixListener: l, uid: os.Geteuid(), log: h.log}
	cs.jobs = newJobTable()
	cs.srv = &http.Server{
		Handler:           cs.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute, // a job wait lasts at most maxWait
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
	}
	h.control = cs
	h.sockets = append(h.sockets, path)
	return nil
}

// ControlPath is the control socket's path, or "" without one.
func (h *Host) ControlPath() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.control == nil {
		return ""
	}
	return h.control.path
}

// serveControl serves the control socket until stopControl; a failure
// of the listener before that is sent on failed.
func (h *Host) serveControl(failed chan<- error) {
	h.mu.Lock()
	cs := h.control
	h.mu.Unlock()
	if cs == nil {
		return
	}
	go func() {
		if err := cs.srv.Serve(cs.l); !errors.Is(err, http.ErrServerClosed) {
			failed <- fmt.Errorf("control socket %s: %w", cs.path, err)
		}
	}()
}

// stopControl stops the control socket: running jobs cancelled and
// waited for, then no new connection or request, and the requests under
// way answered (a few seconds at most). A cancelled merge is left for `vhd merge` to
// finish (chains.MergeStoppedError says so in the log). Idempotent.
func (h *Host) stopControl() {
	h.mu.Lock()
	cs := h.control
	h.mu.Unlock()
	if cs == nil {
		return
	}
	cs.stopOnce.Do(func() {
		// Jobs first: their end also answers the clients waiting on
		// them, so the requests under way finish at once.
		cs.jobs.stop(cs.log)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cs.srv.Shutdown(ctx); err != nil {
			cs.srv.Close()
		}
		cs.l.Close()
	})
}

// claim marks export ex busy with a live operation, or says what runs
// on it already.
func (cs *controlServer) claim(ex *Export, what string) (release func(), aerr *APIError) {
	return cs.claimJob(ex, what, 0)
}

// claimJob is claim for job id (0: not a job), whose id status shows and
// a busy refusal names. The export must still be served once claimed: a
// removal (which claims it too) may have closed it since it was looked
// up.
func (cs *controlServer) claimJob(ex *Export, what string, id int64) (release func(), aerr *APIError) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if op, ok := cs.busy[ex.Name]; ok {
		return nil, busyErr(ex.Name, op)
	}
	if now, ok := cs.host.LookupExport(ex.Name); !ok || now != ex {
		return nil, noExport(ex.Name)
	}
	cs.busy[ex.Name] = busyOp{what: what, job: id}
	return func() {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		delete(cs.busy, ex.Name)
	}, nil
}

func noExport(name string) *APIError {
	return apiErr(CodeNotFound, fmt.Sprintf("no export named %q: 'vhd ctl PATH status' lists them", name))
}

// busyJob is the id of the job running on an export, or 0.
func (cs *controlServer) busyJob(name string) int64 {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.busy[name].job
}

func busyErr(name string, op busyOp) *APIError {
	if op.job != 0 {
		return apiErr(CodeBusy, fmt.Sprintf("export %q is busy: %s (job %d) runs on it; wait for it ('vhd ctl PATH wait %d') or cancel it ('vhd ctl PATH cancel %d'), then try again", name, op.what, op.job, op.job, op.job))
	}
	return apiErr(CodeBusy, fmt.Sprintf("export %q is busy: %s runs on it; try again once it is done", name, op.what))
}
