package main

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestInfoInUse: info says which process has an image open: a served
// image (with -U, since the server writes it) and the parent of a served
// chain (read), named with the server's pid and socket; nothing once the
// server is gone.
func TestInfoInUse(t *testing.T) {
	dir := t.TempDir()
	base, top, sock := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "top.vhd"), filepath.Join(dir, "s.sock")
	vhdOK(t, "create", "--size", "4M", base)
	vhdOK(t, "snapshot", base, top)
	type info struct {
		InUse []inUseJSON `json:"in_use"`
	}
	var before info
	vhdJSON(t, &before, "info", "--json", base)
	if before.InUse == nil || len(before.InUse) != 0 {
		t.Fatalf("an image nobody holds: in_use %v, want []", before.InUse)
	}
	srv, _ := startServe(t, nil, "--socket", sock, top)
	pid := strconv.Itoa(srv.Process.Pid)
	var got info
	vhdJSON(t, &got, "info", "--json", base)
	if len(got.InUse) != 1 || got.InUse[0].PID != srv.Process.Pid || got.InUse[0].Writing || !strings.Contains(got.InUse[0].By, sock) {
		t.Errorf("info of the served chain's parent: in_use %+v, want the server (pid %s, socket %s) reading", got.InUse, pid, sock)
	}
	if h := got.InUse[0].Holder; h.Kind != "serve" || !slices.Contains(h.Sockets, sock) || h.Control == "" || slices.Contains(h.Sockets, h.Control) {
		t.Errorf("in_use for scripts: %+v, want kind serve, sockets holding %s, its control socket apart", h, sock)
	}
	vhdJSON(t, &got, "info", "--json", "-U", top)
	if len(got.InUse) != 1 || !got.InUse[0].Writing || !strings.Contains(got.InUse[0].By, "'vhd serve' (pid "+pid) {
		t.Errorf("info -U of the served top: in_use %+v, want the server writing", got.InUse)
	}
	r := vhdOK(t, "info", base)
	if !strings.Contains(r.stdout, "in use:") || !strings.Contains(r.stdout, "'vhd serve' (pid "+pid+", socket "+sock) {
		t.Errorf("info (text) of a served parent does not name the server:\n%s", r.stdout)
	}
	stopServe(t, srv)
	vhdJSON(t, &got, "info", "--json", top)
	if len(got.InUse) != 0 {
		t.Errorf("after the server stopped: in_use %+v", got.InUse)
	}
	checkOK(t, top)
}
