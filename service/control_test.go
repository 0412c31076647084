package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/chains"
	"vhdkit/engine"
)

// The control socket's tests run a real host serving real chains over
// NBD, and talk to its socket over HTTP, with the client vhd ctl uses
// or with hand-made requests.

// controlHost serves a fresh image of size bytes as export "disk", with
// a control socket, and returns the image's path and a client.
func controlHost(t *testing.T, size int64) (h *Host, image, ctl string, stop func() error) {
	t.Helper()
	dir := t.TempDir()
	image = filepath.Join(dir, "disk.vhd")
	img, err := engine.Create(image, engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := chains.Open(image, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h = New(Config{})
	if _, err := h.AddExport(context.Background(), "disk", c, ExportOptions{Description: "disk.vhd"}); err != nil {
		t.Fatal(err)
	}
	if err := h.ListenUnix(filepath.Join(dir, "nbd.sock")); err != nil {
		t.Fatal(err)
	}
	ctl = filepath.Join(dir, "ctl.sock")
	if err := h.ListenControl(ctl, ControlOptions{}); err != nil {
		t.Fatal(err)
	}
	return h, image, ctl, runHost(t, h)
}

// fill writes n bytes of a pattern through the export's chain, flushed.
func fill(t *testing.T, h *Host, off, n int64, b byte) {
	t.Helper()
	ex, _ := h.LookupExport("disk")
	buf := bytes.Repeat([]byte{b}, 1<<20)
	for p := off; p < off+n; p += int64(len(buf)) {
		if _, err := ex.Disk.WriteAt(buf[:min(int64(len(buf)), off+n-p)], p); err != nil {
			t.Fatal(err)
		}
	}
	if err := ex.Disk.Flush(); err != nil {
		t.Fatal(err)
	}
}

// raw sends one hand-made request and returns the status and the error
// code of the reply (empty for a success), failing if the reply is not
// JSON.
func raw(t *testing.T, sock, method, path, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, err := http.NewRequest(method, "http://vhd"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q\n%s", method, path, ct, data)
	}
	var er errorReply
	if err := json.Unmarshal(data, &er); err != nil {
		t.Fatalf("%s %s: reply is not JSON: %v\n%s", method, path, err, data)
	}
	if resp.StatusCode >= 300 && (er.Error == nil || er.Error.Message == "" || strings.Contains(er.Error.Message, "\n")) {
		t.Errorf("%s %s: %d without a one-line error: %s", method, path, resp.StatusCode, data)
	}
	if er.Error == nil {
		return resp.StatusCode, ""
	}
	return resp.StatusCode, er.Error.Code
}

// TestControlMalformedRequests: every bad request gets a JSON error with
// its code and status, changes nothing, and the server goes on.
func TestControlMalformedRequests(t *testing.T) {
	_, image, ctl, stop := controlHost(t, 16<<20)
	dir := filepath.Dir(image)
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("not to be replaced"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/", "", 404, CodeNotFound},
		{"GET", "/v2/status", "", 404, CodeNotFound},
		{"POST", "/v1/status", "", 405, CodeMethod},
		{"PUT", "/v1/exports/disk", "", 405, CodeMethod},
		{"GET", "/v1/exports/nothing", "", 404, CodeNotFound},
		{"POST", "/v1/exports/disk/snapshot", "{", 400, CodeBadRequest},
		{"POST", "/v1/exports/disk/snapshot", `{"new_top": 7}`, 400, CodeBadRequest},
		{"POST", "/v1/exports/disk/snapshot", `{"new_top": "/x", "bogus": 1}`, 400, CodeBadRequest},
		{"POST", "/v1/exports/disk/snapshot", `{"new_top": "/x"} {}`, 400, CodeBadRequest},
		{"POST", "/v1/exports/disk/snapshot", `[]`, 400, CodeBadRequest},
		{"POST", "/v1/exports/disk/snapshot", `{}`, 400, CodeBadRequest},
		{"POST", "/v1/exports/disk/snapshot", `{"new_top": "top.vhd"}`, 400, CodeBadRequest},
		{"POST", "/v1/exports/disk/snapshot", `{"new_top": "` + strings.Repeat("a", maxBody) + `"}`, 413, CodeTooLarge},
		{"POST", "/v1/exports/disk/snapshot", `{"new_top": "` + other + `"}`, 422, CodeBadImage}, // not an empty child to take over
		{"POST", "/v1/exports/nothing/snapshot", `{"new_top": "/tmp/x.vhd"}`, 404, CodeNotFound},
		{"POST", "/v1/exports/disk/merge", ``, 409, CodeRefused}, // a lone image: nothing under it
		{"POST", "/v1/exports/disk/merge", `{"layer": "/nonexistent.vhd"}`, 404, CodeNotFound},
		{"POST", "/v1/exports/disk/undo/commit", ``, 409, CodeNoUndo},
		{"POST", "/v1/exports/disk/undo/keep", ``, 404, CodeNotFound},
		{"POST", "/v1/exports", `{"image": "` + image + `"}`, 400, CodeBadRequest},
		{"POST", "/v1/exports", `{"name": "a/b", "image": "` + image + `"}`, 400, CodeBadRequest},
		{"POST", "/v1/exports", `{"name": "..", "image": "` + image + `"}`, 400, CodeBadRequest},
		{"POST", "/v1/exports", `{"name": "x\u0001", "image": "` + image + `"}`, 400, CodeBadRequest},
		{"POST", "/v1/exports", `{"name": "x"}`, 400, CodeBadRequest},
		{"POST", "/v1/exports", `{"name": "x", "image": "` + image + `", "view_of": "disk"}`, 400, CodeBadRequest},
		{"POST", "/v1/exports", `{"name": "x", "image": "` + image + `", "read_only": true, "undo": true}`, 400, CodeBadRequest},
		{"POST", "/v1/exports", `{"name": "x", "image": "` + filepath.Join(dir, "none.vhd") + `"}`, 404, CodeNotFound},
		{"POST", "/v1/exports", `{"name": "x", "image": "` + image + `"}`, 409, CodeLocked}, // served already
		{"POST", "/v1/exports", `{"name": "disk", "image": "` + image + `", "read_only": true}`, 409, CodeExists},
		{"POST", "/v1/exports", `{"name": "x", "view_of": "disk"}`, 409, CodeRefused}, // no frozen layer yet
		{"POST", "/v1/exports", `{"name": "x", "view_of": "nothing"}`, 404, CodeNotFound},
		{"DELETE", "/v1/exports/nothing", "", 404, CodeNotFound},
		{"GET", "/v1/jobs/x", "", 400, CodeBadRequest},
		{"GET", "/v1/jobs/99", "", 404, CodeNotFound},
		{"POST", "/v1/jobs/99/cancel", "", 404, CodeNotFound},
	} {
		status, code := raw(t, ctl, tc.method, tc.path, tc.body)
		if status != tc.status || code != tc.code {
			t.Errorf("%s %s %.60q: %d %s, want %d %s", tc.method, tc.path, tc.body, status, code, tc.status, tc.code)
		}
	}
	if status, code := raw(t, ctl, "GET", "/v1/status", ""); status != 200 {
		t.Fatalf("status after the bad requests: %d %s", status, code)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 2 {
		t.Errorf("bad requests left files behind: %v", names)
	}
	released(t, image)
}

// TestControlBusy: while a live operation holds an export, every other
// one is refused at once as busy, naming it, and none waits.
func TestControlBusy(t *testing.T) {
	h, image, ctl, stop := controlHost(t, 16<<20)
	ex, _ := h.LookupExport("disk")
	release, aerr := h.control.claimJob(ex, "a merge", 7)
	if aerr != nil {
		t.Fatal(aerr)
	}
	top := filepath.Join(filepath.Dir(image), "top.vhd")
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/v1/exports/disk/snapshot", `{"new_top": "` + top + `"}`},
		{"DELETE", "/v1/exports/disk", ""},
	} {
		start := time.Now()
		if status, code := raw(t, ctl, r.method, r.path, r.body); status != 409 || code != CodeBusy {
			t.Errorf("%s %s while busy: %d %s, want 409 busy", r.method, r.path, status, code)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s %s waited %v instead of refusing", r.method, r.path, d)
		}
	}
	_, err := NewControlClient(ctl).Snapshot(context.Background(), "disk", top)
	if err == nil || !strings.Contains(err.Error(), "job 7") {
		t.Errorf("busy error does not name the job: %v", err)
	}
	release()
	if _, err := NewControlClient(ctl).Snapshot(context.Background(), "disk", top); err != nil {
		t.Fatalf("snapshot once free: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	released(t, top)
}

// TestControlJobOutlivesItsClient: a merge whose client hangs up at once
// runs to its end; another merge meanwhile is busy; the result can be
// fetched afterwards.
func TestControlJobOutlivesItsClient(t *testing.T) {
	h, image, ctl, stop := controlHost(t, 256<<20)
	cl := NewControlClient(ctl)
	ctx := context.Background()
	top := filepath.Join(filepath.Dir(image), "top.vhd")
	if _, err := cl.Snapshot(ctx, "disk", top); err != nil {
		t.Fatal(err)
	}
	fill(t, h, 0, 192<<20, 0x5a)

	// The request's context ends as soon as the reply is in: the job
	// must not depend on it, nor on the connection.
	rctx, cancel := context.WithCancel(ctx)
	j, err := cl.Merge(rctx, "disk", "")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	cl.hc.CloseIdleConnections()
	if _, err := cl.Merge(ctx, "disk", ""); !isCode(err, CodeBusy) {
		t.Errorf("second merge while the first runs: %v, want busy", err)
	}
	for !j.Finished() {
		if j, err = cl.Job(ctx, j.ID, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if j.State != JobSucceeded || j.Result == nil || j.Result.Copied != 192<<20 || j.DoneBytes != j.TotalBytes {
		t.Fatalf("job after its client left: %+v", j)
	}
	st, err := cl.Export(ctx, "disk")
	if err != nil || len(st.Layers) != 1 || st.Layers[0] != image || st.Job != 0 {
		t.Fatalf("after the merge: %+v %v", st, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	gone(t, top)
	released(t, image)
	if got := readImage(t, image, 100<<20, 4096); !bytes.Equal(got, bytes.Repeat([]byte{0x5a}, 4096)) {
		t.Error("the merged data is not in the image")
	}
}

// TestControlCancelAndRerun: a cancelled merge stops half-way, says so
// (merge_interrupted), and the export serves what it served; running the
// merge again live finishes it.
func TestControlCancelAndRerun(t *testing.T) {
	h, image, ctl, stop := controlHost(t, 512<<20)
	cl := NewControlClient(ctl)
	ctx := context.Background()
	top := filepath.Join(filepath.Dir(image), "top.vhd")
	if _, err := cl.Snapshot(ctx, "disk", top); err != nil {
		t.Fatal(err)
	}
	fill(t, h, 0, 384<<20, 0xa5)
	j, err := cl.Merge(ctx, "disk", "")
	if err != nil {
		t.Fatal(err)
	}
	if j, err = cl.Cancel(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	for !j.Finished() {
		if j, err = cl.Job(ctx, j.ID, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if j.State != JobCancelled || j.Error == nil || j.Error.Code != CodeMergeInterrupted || !strings.Contains(j.Error.Message, "again") {
		t.Fatalf("cancelled job: %+v %+v", j, j.Error)
	}
	if _, err := cl.Cancel(ctx, j.ID); !isCode(err, CodeNotRunning) {
		t.Errorf("cancel of an ended job: %v", err)
	}
	ex, _ := h.LookupExport("disk")
	buf := make([]byte, 1<<20)
	if _, err := ex.Disk.ReadAt(buf, 300<<20); err != nil || !bytes.Equal(buf, bytes.Repeat([]byte{0xa5}, 1<<20)) {
		t.Fatalf("the export after a cancelled merge: %v", err)
	}
	if j, err = cl.Merge(ctx, "disk", ""); err != nil {
		t.Fatal(err)
	}
	for !j.Finished() {
		if j, err = cl.Job(ctx, j.ID, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if j.State != JobSucceeded {
		t.Fatalf("merge run again: %+v %+v", j, j.Error)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	gone(t, top)
	released(t, image)
}

// TestControlStopCancelsJobs: a host that stops while a merge runs
// cancels it and waits for it before closing the chain; the merge is
// then finished offline, as the log says.
func TestControlStopCancelsJobs(t *testing.T) {
	h, image, ctl, stop := controlHost(t, 512<<20)
	cl := NewControlClient(ctl)
	ctx := context.Background()
	top := filepath.Join(filepath.Dir(image), "top.vhd")
	if _, err := cl.Snapshot(ctx, "disk", top); err != nil {
		t.Fatal(err)
	}
	fill(t, h, 0, 384<<20, 0x3c)
	if _, err := cl.Merge(ctx, "disk", ""); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	gone(t, ctl)
	if _, err := chains.Open(top, chains.Options{ReadOnly: true}); !errors.Is(err, chains.ErrMergeInterrupted) {
		t.Fatalf("top after a merge cut short by the stop: %v", err)
	}
	if _, err := chains.Merge(ctx, top, chains.MergeOptions{}); err != nil {
		t.Fatalf("finishing the merge offline: %v", err)
	}
	released(t, image)
	if got := readImage(t, image, 300<<20, 4096); !bytes.Equal(got, bytes.Repeat([]byte{0x3c}, 4096)) {
		t.Error("the data is not in the image after the merge")
	}
}

func isCode(err error, code string) bool {
	var ce *ControlError
	return errors.As(err, &ce) && ce.Code == code
}

// TestControlSocketMode: the socket is 0600 from the moment it has its
// name, even with no umask at all, and a file there is not replaced.
func TestControlSocketMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "c.ctl")
	l, err := listenControl(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(p)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket: %v %v", fi.Mode(), err)
	}
	if _, err := listenControl(p); err == nil || !strings.Contains(err.Error(), "listening") {
		t.Errorf("second listener on a live socket: %v", err)
	}
	l.Close()
	os.Remove(p)
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenControl(p); err == nil {
		t.Error("a regular file at the control socket's path was replaced")
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 1 {
		t.Errorf("files left: %v", names)
	}
}

// TestControlBackToBack: once a client sees a job's end, the export is
// free: the next live operation, sent at once, is never refused as busy.
func TestControlBackToBack(t *testing.T) {
	h, image, ctl, stop := controlHost(t, 16<<20)
	cl := NewControlClient(ctl)
	ctx := context.Background()
	dir := filepath.Dir(image)
	for i := range 100 {
		top := filepath.Join(dir, fmt.Sprintf("top%d.vhd", i))
		if _, err := cl.Snapshot(ctx, "disk", top); err != nil {
			t.Fatalf("snapshot %d, right after a merge ended: %v", i, err)
		}
		fill(t, h, int64(i%16)<<20, 64<<10, byte(i))
		j, err := cl.Merge(ctx, "disk", "")
		for err == nil && !j.Finished() {
			j, err = cl.Job(ctx, j.ID, 10*time.Second)
		}
		if err != nil || j.State != JobSucceeded {
			t.Fatalf("merge %d: %v %+v", i, err, j)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	released(t, image)
}

// TestControlClaimAfterRemoval: an operation that looked an export up
// just before a removal closed it cannot claim it afterwards (nor the
// export added under the same name since): it would work on a closed
// chain.
func TestControlClaimAfterRemoval(t *testing.T) {
	h, image, ctl, stop := controlHost(t, 16<<20)
	ex, _ := h.LookupExport("disk")
	cl := NewControlClient(ctl)
	if _, err := cl.Remove(context.Background(), "disk"); err != nil {
		t.Fatal(err)
	}
	if _, aerr := h.control.claim(ex, "a snapshot"); aerr == nil || aerr.Code != CodeNotFound {
		t.Fatalf("claim of a removed export: %v", aerr)
	}
	if _, err := cl.Add(context.Background(), AddRequest{Name: "disk", Image: image}); err != nil {
		t.Fatal(err)
	}
	if _, aerr := h.control.claim(ex, "a snapshot"); aerr == nil || aerr.Code != CodeNotFound {
		t.Fatalf("claim of an export removed and added again: %v", aerr)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	released(t, image)
}

// TestControlHandlerPanic: a handler that panics answers 500 with a JSON
// error, and the server goes on.
func TestControlHandlerPanic(t *testing.T) {
	h, image, ctl, stop := controlHost(t, 16<<20)
	rec := httptest.NewRecorder()
	h.control.serve(map[string]handlerFunc{"GET": func(*http.Request) (reply, *APIError) { panic("boom") }}).
		ServeHTTP(rec, httptest.NewRequest("GET", "/v1/status", nil))
	var er errorReply
	if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || rec.Code != 500 || er.Error == nil || er.Error.Code != CodeFailed || !strings.Contains(er.Error.Message, "boom") {
		t.Fatalf("a panicking handler answered %d %s (%v)", rec.Code, rec.Body, err)
	}
	if status, _ := raw(t, ctl, "GET", "/v1/status", ""); status != 200 {
		t.Fatalf("status after a panic: %d", status)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	released(t, image)
}
