package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestSwappedArgumentsAnswered: arguments in the wrong order, or a
// missing verb, get the command line meant; a ctl verb given the served
// image's path acts on its export. Before: "d.vhd already exists",
// "missing IMAGE", "\"status\" is not a ctl verb" and "no export named
// /path/d.vhd".
func TestSwappedArgumentsAnswered(t *testing.T) {
	dir := t.TempDir()
	img, newTop := filepath.Join(dir, "d.vhd"), filepath.Join(dir, "new.vhd")
	vhdOK(t, "create", "--size", "4M", img)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"snapshot", newTop, img}, "IMAGE comes first, then the new top: vhd snapshot " + img + " " + newTop},
		{[]string{"undo", img}, "missing the verb: vhd undo status|commit|discard " + img},
		{[]string{"ctl", "status", "4242"}, "the control socket comes first, then the verb: vhd ctl 4242 status"},
	} {
		if r := vhdCode(t, exitUsage, c.args...); !strings.Contains(r.stderr, c.want) {
			t.Errorf("vhd %s: want %q in\n%s", strings.Join(c.args, " "), c.want, r.stderr)
		}
	}

	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), img+"=disk")
	r := vhdOK(t, "ctl", srv.control, "snapshot", img, newTop)
	if !strings.Contains(r.stdout, "export disk: writes go to "+newTop) {
		t.Errorf("ctl snapshot by the image's path: %s", r)
	}
	r = vhdCode(t, 1, "ctl", srv.control, "merge", filepath.Join(dir, "other.vhd"))
	if !strings.Contains(r.stderr, "no export of the server serves") {
		t.Errorf("ctl merge of a file no export serves: %s", r)
	}
	vhdOK(t, "ctl", srv.control, "merge", newTop)
	srv.stop(t)
	checkOK(t, img)
}
