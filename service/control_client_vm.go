package service

import (
	"context"
	"net/http"
	"time"
)

// VM is GET /v1/vm.
func (c *ControlClient) VM(ctx context.Context) (*VMStatus, error) {
	var st VMStatus
	return &st, c.do(ctx, "GET", "/v1/vm", nil, &st)
}

// VMVerb is POST /v1/vm/{verb}: pause, resume, powerdown or reset.
func (c *ControlClient) VMVerb(ctx context.Context, verb string) (*VMStatus, error) {
	var st VMStatus
	return &st, c.do(ctx, "POST", "/v1/vm/"+verb, nil, &st)
}

// VMSave is POST /v1/vm/save. Its reply comes once the guest's memory
// is written, which may take longer than other replies: it waits up to
// the server's bound for a save.
func (c *ControlClient) VMSave(ctx context.Context, state string) (*SavedState, error) {
	tr := c.hc.Transport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = saveWait + 2*time.Minute
	long := &ControlClient{path: c.path, hc: &http.Client{Transport: tr}}
	defer tr.CloseIdleConnections()
	var saved SavedState
	return &saved, long.do(ctx, "POST", "/v1/vm/save", SaveRequest{State: state}, &saved)
}
