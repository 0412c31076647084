package service

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The routes (docs/CLI.md has them with every JSON shape):
//
//	GET    /v1/status                      Status
//	POST   /v1/exports                     AddRequest -> 201 ExportStatus
//	GET    /v1/exports/{name}              ExportStatus
//	DELETE /v1/exports/{name}              Removed
//	POST   /v1/exports/{name}/snapshot     SnapshotRequest -> ExportStatus
//	POST   /v1/exports/{name}/merge        MergeRequest -> 202 Job
//	POST   /v1/exports/{name}/undo/commit  -> 202 Job
//	POST   /v1/exports/{name}/undo/discard -> ExportStatus
//	GET    /v1/jobs/{id}[?wait=DURATION]   Job (waits up to 30s for its end)
//	POST   /v1/jobs/{id}/cancel            -> 202 Job
//	GET    /v1/vm, POST /v1/vm/{verb}      the guest of a vhd run (control_vm.go)
//	and the backup routes (control_backup_api.go)
//
// Every error is {"error": {"code", "message"}} with the code's HTTP
// status (control_errors.go); a handler that panics answers 500 with
// JSON too, and the server goes on.

// reply is what a handler answers: a status and a body, or an error.
type reply struct {
	status int
	body   any
}

type handlerFunc func(r *http.Request) (reply, *APIError)

// routes maps the paths to their handlers, by method.
func (cs *controlServer) routes() http.Handler {
	mux := http.NewServeMux()
	route := func(path string, byMethod map[string]handlerFunc) {
		mux.Handle(path, cs.serve(byMethod))
	}
	route("/v1/status", map[string]handlerFunc{"GET": cs.getStatus})
	route("/v1/exports", map[string]handlerFunc{"POST": cs.postExport})
	route("/v1/exports/{name}", map[string]handlerFunc{"GET": cs.getExport, "DELETE": cs.deleteExport})
	route("/v1/exports/{name}/snapshot", map[string]handlerFunc{"POST": cs.postSnapshot})
	route("/v1/exports/{name}/merge", map[string]handlerFunc{"POST": cs.postMerge})
	route("/v1/exports/{name}/undo/{verb}", map[string]handlerFunc{"POST": cs.postUndo})
	route("/v1/jobs/{id}", map[string]handlerFunc{"GET": cs.getJob})
	route("/v1/jobs/{id}/cancel", map[string]handlerFunc{"POST": cs.postCancel})
	cs.vmRoutes(mux) // control_vm.go: a vhd run's guest
	cs.backupRoutes(route)
	route("/", nil)
	return mux
}

// serve runs the handler for the request's method and writes its reply
// or error as JSON.
func (cs *controlServer) serve(byMethod map[string]handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				cs.log.Error("vhd: control request panicked", "method", r.Method, "path", r.URL.Path, "panic", p)
				writeError(w, apiErr(CodeFailed, fmt.Sprintf("internal error (%v): the server goes on; please report it", p)))
			}
		}()
		if byMethod == nil {
			writeError(w, apiErr(CodeNotFound, fmt.Sprintf("no such route: %s %s ('vhd help ctl' lists the routes)", r.Method, r.URL.Path)))
			return
		}
		h, ok := byMethod[r.Method]
		if !ok {
			w.Header().Set("Allow", allowed(byMethod))
			writeError(w, apiErr(CodeMethod, fmt.Sprintf("%s does not take %s: use %s", r.URL.Path, r.Method, allowed(byMethod))))
			return
		}
		rep, aerr := h(r)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		writeJSON(w, rep.status, rep.body)
	})
}

func allowed(byMethod map[string]handlerFunc) string {
	var ms []string
	for m := range byMethod {
		ms = append(ms, m)
	}
	return strings.Join(ms, ", ")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"failed","message":"the reply could not be encoded"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, e *APIError) {
	writeJSON(w, e.status(), errorReply{Error: e})
}

func ok(v any) (reply, *APIError) { return reply{http.StatusOK, v}, nil }

// detached keeps a request's values but not its end: a change to the
// host finishes even if the client goes away meanwhile (it can look at
// the status to see what happened).
func detached(r *http.Request) context.Context { return context.WithoutCancel(r.Context()) }

func (cs *controlServer) getStatus(r *http.Request) (reply, *APIError) {
	return ok(cs.status())
}

func (cs *controlServer) getExport(r *http.Request) (reply, *APIError) {
	name := r.PathValue("name")
	ex, found := cs.host.LookupExport(name)
	if !found {
		return reply{}, apiErr(CodeNotFound, fmt.Sprintf("no export named %q: 'vhd ctl PATH status' lists them", name))
	}
	return ok(cs.exportStatus(ex))
}

func (cs *controlServer) postExport(r *http.Request) (reply, *APIError) {
	var req AddRequest
	if aerr := decodeBody(r.Body, &req); aerr != nil {
		return reply{}, aerr
	}
	st, aerr := cs.add(detached(r), req)
	return reply{http.StatusCreated, st}, aerr
}

func (cs *controlServer) deleteExport(r *http.Request) (reply, *APIError) {
	name := r.PathValue("name")
	if aerr := cs.remove(detached(r), name); aerr != nil {
		return reply{}, aerr
	}
	return ok(Removed{Removed: name})
}

func (cs *controlServer) postSnapshot(r *http.Request) (reply, *APIError) {
	var req SnapshotRequest
	if aerr := decodeBody(r.Body, &req); aerr != nil {
		return reply{}, aerr
	}
	st, aerr := cs.snapshot(r.PathValue("name"), req)
	return reply{http.StatusOK, st}, aerr
}

func (cs *controlServer) postMerge(r *http.Request) (reply, *APIError) {
	var req MergeRequest
	if aerr := decodeBody(r.Body, &req); aerr != nil {
		return reply{}, aerr
	}
	j, aerr := cs.merge(r.PathValue("name"), req)
	return reply{http.StatusAccepted, j}, aerr
}

func (cs *controlServer) postUndo(r *http.Request) (reply, *APIError) {
	var none struct{}
	if aerr := decodeBody(r.Body, &none); aerr != nil {
		return reply{}, aerr
	}
	name := r.PathValue("name")
	switch verb := r.PathValue("verb"); verb {
	case "commit":
		j, aerr := cs.undoCommit(name)
		return reply{http.StatusAccepted, j}, aerr
	case "discard":
		st, aerr := cs.undoDiscard(name)
		return reply{http.StatusOK, st}, aerr
	default:
		return reply{}, apiErr(CodeNotFound, fmt.Sprintf("undo %q: want commit or discard", verb))
	}
}

func (cs *controlServer) getJob(r *http.Request) (reply, *APIError) {
	j, aerr := cs.job(r)
	if aerr != nil {
		return reply{}, aerr
	}
	if w := r.URL.Query().Get("wait"); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil || d < 0 {
			return reply{}, apiErr(CodeBadRequest, fmt.Sprintf("wait=%q: want a duration such as 10s (at most %v)", w, maxWait))
		}
		j.wait(r.Context(), d, cs.jobs.ctx.Done())
	}
	return ok(j.snapshot())
}

func (cs *controlServer) postCancel(r *http.Request) (reply, *APIError) {
	j, aerr := cs.job(r)
	if aerr != nil {
		return reply{}, aerr
	}
	if !j.requestCancel() {
		info := j.snapshot()
		return reply{}, apiErr(CodeNotRunning, fmt.Sprintf("job %d has ended already (%s)", info.ID, info.State))
	}
	return reply{http.StatusAccepted, j.snapshot()}, nil
}

// job finds the job the path names.
func (cs *controlServer) job(r *http.Request) (*job, *APIError) {
	s := r.PathValue("id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil, apiErr(CodeBadRequest, fmt.Sprintf("job id %q is not a number", s))
	}
	j, found := cs.jobs.get(id)
	if !found {
		return nil, apiErr(CodeNotFound, fmt.Sprintf("no job %d: it never ran here, or ended long ago ('vhd ctl PATH status' lists the jobs)", id))
	}
	return j, nil
}
