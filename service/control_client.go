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
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// ControlClient talks to a control socket (vhd ctl, the runner).
type ControlClient struct {
	path string
	hc   *http.Client
}

// NewControlClient is a client of the control socket at path.
func NewControlClient(path string) *ControlClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
		// Every reply comes within seconds (a job wait within 30 s, a
		// removal within the NBD grace period): a socket that takes the
		// request and says nothing is not a control socket.
		ResponseHeaderTimeout: 2 * time.Minute,
	}
	return &ControlClient{path: path, hc: &http.Client{Transport: tr}}
}

// ControlError is an error reply from the server: its HTTP status, code
// and message (APIError).
type ControlError struct {
	Status int
	APIError
}

func (e *ControlError) Error() string { return e.Message }

// Status is GET /v1/status.
func (c *ControlClient) Status(ctx context.Context) (*Status, error) {
	var st Status
	return &st, c.do(ctx, "GET", "/v1/status", nil, &st)
}

// Export is GET /v1/exports/{name}.
func (c *ControlClient) Export(ctx context.Context, name string) (*ExportStatus, error) {
	var st ExportStatus
	return &st, c.do(ctx, "GET", exportPath(name, ""), nil, &st)
}

// Add is POST /v1/exports.
func (c *ControlClient) Add(ctx context.Context, req AddRequest) (*ExportStatus, error) {
	var st ExportStatus
	return &st, c.do(ctx, "POST", "/v1/exports", req, &st)
}

// Remove is DELETE /v1/exports/{name}.
func (c *ControlClient) Remove(ctx context.Context, name string) (*Removed, error) {
	var r Removed
	return &r, c.do(ctx, "DELETE", exportPath(name, ""), nil, &r)
}

// Snapshot is POST /v1/exports/{name}/snapshot.
func (c *ControlClient) Snapshot(ctx context.Context, name, newTop string) (*ExportStatus, error) {
	var st ExportStatus
	return &st, c.do(ctx, "POST", exportPath(name, "/snapshot"), SnapshotRequest{NewTop: newTop}, &st)
}

// Merge is POST /v1/exports/{name}/merge: it returns the job started.
func (c *ControlClient) Merge(ctx context.Context, name, layer string) (*Job, error) {
	var j Job
	return &j, c.do(ctx, "POST", exportPath(name, "/merge"), MergeRequest{Layer: layer}, &j)
}

// UndoCommit is POST /v1/exports/{name}/undo/commit: it returns the job
// started.
func (c *ControlClient) UndoCommit(ctx context.Context, name string) (*Job, error) {
	var j Job
	return &j, c.do(ctx, "POST", exportPath(name, "/undo/commit"), nil, &j)
}

// UndoDiscard is POST /v1/exports/{name}/undo/discard.
func (c *ControlClient) UndoDiscard(ctx context.Context, name string) (*ExportStatus, error) {
	var st ExportStatus
	return &st, c.do(ctx, "POST", exportPath(name, "/undo/discard"), nil, &st)
}

// Job is GET /v1/jobs/{id}, waiting at most wait for the job to end.
func (c *ControlClient) Job(ctx context.Context, id int64, wait time.Duration) (*Job, error) {
	var j Job
	p := "/v1/jobs/" + strconv.FormatInt(id, 10)
	if wait > 0 {
		p += "?wait=" + url.QueryEscape(wait.String())
	}
	return &j, c.do(ctx, "GET", p, nil, &j)
}

// Cancel is POST /v1/jobs/{id}/cancel.
func (c *ControlClient) Cancel(ctx context.Context, id int64) (*Job, error) {
	var j Job
	return &j, c.do(ctx, "POST", "/v1/jobs/"+strconv.FormatInt(id, 10)+"/cancel", nil, &j)
}

func exportPath(name, rest string) string {
	return "/v1/exports/" + url.PathEscape(name) + rest
}

// do sends a request with body (JSON, if not nil) and decodes a
// success into out, an error reply into a *ControlError.
func (c *ControlClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://vhd"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("control socket %s: reading the reply: %w", c.path, err)
	}
	if resp.StatusCode >= 300 {
		var er errorReply
		if json.Unmarshal(data, &er) != nil || er.Error == nil {
			return fmt.Errorf("control socket %s: %s with no error in JSON: is it a vhd control socket?", c.path, resp.Status)
		}
		return &ControlError{Status: resp.StatusCode, APIError: *er.Error}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("control socket %s: the reply is not the JSON expected (%v): is it a vhd control socket?", c.path, err)
	}
	return nil
}

// dialError says what a failure to reach the socket means.
func (c *ControlClient) dialError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return &DialError{Path: c.path, Err: err, Msg: fmt.Sprintf("no control socket at %s: is vhd serve or vhd run running? (each prints control: PATH when it starts)", c.path)}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &DialError{Path: c.path, Err: err, Msg: fmt.Sprintf("nobody answers on %s: the vhd serve or vhd run that made it has stopped", c.path)}
	case errors.Is(err, syscall.EACCES):
		return &DialError{Path: c.path, Err: err, Msg: fmt.Sprintf("the control socket %s is not yours: run vhd ctl as the user who started the server", c.path)}
	}
	return fmt.Errorf("control socket %s: %w", c.path, err)
}

// DialError says why a control socket could not be reached, and what to
// do, in its own words: the HTTP client's error ("Get URL: dial unix
// PATH: connect: ...") stays out of the message but matches (errors.Is).
type DialError struct {
	Path string
	Msg  string
	Err  error
}

func (e *DialError) Error() string { return e.Msg }
func (e *DialError) Unwrap() error { return e.Err }
