package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"vhdkit/chains"
	"vhdkit/service"
)

// TestCtlLiveChain is the control socket end to end: a real `vhd serve
// --fuse` of a chain, written at QD8 by nbdsh the whole time, is
// snapshotted twice, a frozen middle layer is exported read-only (a
// backup's view) and read by nbdinfo and nbdcopy while the disk is
// written, a merge of that layer is refused while the view exists,
// then the view is removed, the middle layer merged and the top
// merged. Before and after each operation the FUSE file and an NBD
// client read the same bytes, those the test wrote; at the end the
// writer reads back every write it made, and every layer left passes
// vhd check.
func TestCtlLiveChain(t *testing.T) {
	needFUSE(t)
	need(t, "nbdsh", "nbdcopy", "nbdinfo")
	const size, half = 64 << 20, 32 << 20
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	vhdOK(t, "create", "--size", "64M", base)
	vhdOK(t, "snapshot", base, child)
	s1, s2 := filepath.Join(dir, "s1.vhd"), filepath.Join(dir, "s2.vhd")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), "--fuse", mnt, child+"=disk")
	uri := srv.uris[0]
	if srv.fuse != mnt || srv.control == "" {
		t.Fatalf("vhd serve printed fuse:%q control:%q", srv.fuse, srv.control)
	}
	if fi, err := os.Lstat(srv.control); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %s: %v %v", srv.control, fi, err)
	}
	// The writer owns the first half, the test the second.
	writer := startClient(t, uri, "write", half, 1)
	mine := newRegion(filepath.Join(mnt, "disk"), half, size-half)
	step := func(what string, args ...string) result {
		t.Helper()
		mine.write(t, 1<<20)
		mine.same(t, uri, "before "+what)
		r := srv.ctl(t, 0, args...)
		mine.same(t, uri, "after "+what)
		return r
	}

	step("the first snapshot", "snapshot", "disk", s1)
	step("the second snapshot", "snapshot", "disk", s2)
	frozen := slices.Clone(mine.model) // s1 froze with what the test wrote so far

	// A backup's view of the middle layer: read-only, and the same
	// bytes however much the disk is written meanwhile.
	r := srv.ctl(t, 0, "add", "backup", "--view-of", "disk", "--layer", s1)
	view := strings.Fields(r.stdout)[0]
	if !strings.Contains(view, "/backup?") {
		t.Fatalf("add printed %q", r.stdout)
	}
	if err := clientCmd("nbdinfo", "--is", "read-only", view).Run(); err != nil {
		t.Errorf("nbdinfo --is read-only %s: %v", view, err)
	}
	first := nbdRead(t, view)
	if !bytes.Equal(first[half:], frozen) {
		t.Fatal("the view does not read what the layer froze")
	}
	mine.write(t, 1<<20)
	if again := nbdRead(t, view); !bytes.Equal(again, first) {
		t.Fatal("the view changed while the disk was written")
	}
	r = srv.ctl(t, 1, "merge", "--layer", s1, "disk")
	if !strings.Contains(r.stderr, "remove that export first") {
		t.Errorf("merge of a layer a view holds:\n%s", r)
	}
	srv.ctl(t, 0, "remove", "backup")
	if err := clientCmd("nbdinfo", view).Run(); err == nil {
		t.Error("the removed view is still served")
	}

	r = step("the merge of the middle layer", "merge", "--layer", s1, "disk")
	if !strings.Contains(r.stdout, "into "+child) {
		t.Errorf("merge --layer said:\n%s", r)
	}
	r = step("the merge of the top", "merge", "disk")
	if !strings.Contains(r.stdout, "into "+child+"; removed "+s2) {
		t.Errorf("merge said:\n%s", r)
	}

	checkStatusJSON(t, srv, []string{child, base})
	if r := vhdCode(t, 1, "info", child); !strings.Contains(r.stderr, "'vhd ctl "+srv.control+" remove EXPORT'") {
		t.Errorf("a served image's lock refusal does not offer vhd ctl remove:\n%s", r)
	}
	for _, by := range []string{strconv.Itoa(srv.cmd.Process.Pid), filepath.Join(dir, "nbd.sock")} {
		if r := vhdOK(t, "ctl", by, "status"); !strings.Contains(r.stdout, "control socket "+srv.control) {
			t.Errorf("vhd ctl %s status found another server:\n%s", by, r)
		}
	}
	writer.finish(t)
	whole := mine.same(t, uri, "at the end")
	if fuse, err := os.ReadFile(filepath.Join(mnt, "disk")); err != nil || !bytes.Equal(fuse, whole) {
		t.Fatalf("FUSE and NBD read different disks at the end (%v)", err)
	}
	srv.stop(t)
	for _, gone := range []string{s1, s2} {
		if _, err := os.Lstat(gone); !os.IsNotExist(err) {
			t.Errorf("%s is still there after its merge: %v", gone, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.merg*")); len(left) != 0 {
		t.Errorf("merge files left: %v", left)
	}
	checkOK(t, child)
	checkOK(t, base)
}

// checkStatusJSON checks the shape of status --json (docs/CLI.md) on
// the live chain: every field there, with the values it must hold.
func checkStatusJSON(t *testing.T, srv *served, layers []string) {
	t.Helper()
	r := srv.ctl(t, 0, "--json", "status")
	var raw map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{"pid", "control", "exports", "fuse_mounts", "jobs"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status --json has no %q", k)
		}
	}
	ex := raw["exports"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "description", "uris", "layers", "read_only", "undo", "view_of", "fuse", "job", "nbd"} {
		if _, ok := ex[k]; !ok {
			t.Errorf("status --json: an export has no %q", k)
		}
	}
	nbd := ex["nbd"].(map[string]any)
	for _, k := range []string{"clients_connected", "connections_total", "requests", "errors", "bytes_read", "bytes_written", "latency", "commands"} {
		if _, ok := nbd[k]; !ok {
			t.Errorf("status --json: nbd has no %q", k)
		}
	}
	var st service.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	e := st.Exports[0]
	switch {
	case st.PID != srv.cmd.Process.Pid || st.Control != srv.control:
		t.Errorf("status: pid %d control %s", st.PID, st.Control)
	case e.Name != "disk" || !slices.Equal(e.Layers, layers) || e.ReadOnly || e.Undo || e.FUSE != srv.fuse || e.Job != 0:
		t.Errorf("status: export %+v", e)
	case !slices.Equal(st.FUSEMounts, []string{srv.fuse}):
		t.Errorf("status: fuse mounts %v", st.FUSEMounts)
	case e.NBD.ClientsConnected < 1 || e.NBD.Requests == 0 || e.NBD.BytesWritten == 0 || e.NBD.Errors != 0 || e.NBD.Latency.P99Micros <= 0:
		t.Errorf("status: NBD statistics of a disk being written: %+v", e.NBD)
	}
	merges := 0
	for _, j := range st.Jobs {
		if j.Kind == service.JobMerge && j.State == service.JobSucceeded && j.Result != nil && j.Ended != nil {
			merges++
		}
	}
	if merges != 2 {
		t.Errorf("status: %d merges succeeded, want 2: %+v", merges, st.Jobs)
	}
}

// TestCtlUndo: an export served with --undo has its undo disk committed
// while nbdsh writes it (every write kept, as the writer checks), then
// committed again and discarded while an NBD client reads it: it reads
// as at the last commit,
// through FUSE and NBD alike, and the image and the fresh undo disk pass
// vhd check.
func TestCtlUndo(t *testing.T) {
	needFUSE(t)
	need(t, "nbdsh", "nbdcopy")
	const size, half = 64 << 20, 32 << 20
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.vhd")
	vhdOK(t, "create", "--size", "64M", img)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), "--undo", "--fuse", mnt, img)
	uri := srv.uris[0]
	mine := newRegion(filepath.Join(mnt, "disk"), half, size-half)
	srv.ctl(t, 1, "snapshot", "disk", filepath.Join(dir, "top.vhd")) // an undo disk changes by undo only

	writer := startClient(t, uri, "write", half, 2)
	mine.write(t, 4<<20)
	mine.same(t, uri, "before the commit")
	r := srv.ctl(t, 0, "undo", "commit", "disk")
	if !strings.Contains(r.stdout, "committed") {
		t.Errorf("undo commit said:\n%s", r)
	}
	mine.same(t, uri, "after the commit")
	writer.finish(t)
	// The writer went on after the commit, into the fresh undo disk:
	// commit again, with a reader this time, for a known point.
	reader := startClient(t, uri, "read", size, 3)
	srv.ctl(t, 0, "undo", "commit", "disk")
	committed := nbdRead(t, uri)

	mine.write(t, 4<<20)
	mine.same(t, uri, "before the discard")
	srv.ctl(t, 0, "undo", "discard", "disk")
	if got := nbdRead(t, uri); !bytes.Equal(got, committed) {
		t.Fatal("after the discard the disk does not read as it was at the commit")
	}
	mine.model = committed[half:]
	mine.same(t, uri, "after the discard")
	reader.finish(t)
	srv.stop(t)
	checkOK(t, img)
	// The fresh undo disk after the discard took no write: the server
	// removed it when it stopped.
	if _, err := os.Stat(chains.UndoPath(img)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the empty undo disk is left after the server stopped: %v", err)
	}
}

// TestCtlUsage: vhd ctl's command line errors exit 2 and name the
// problem; a socket nobody serves exits 1 saying so.
func TestCtlUsage(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.ctl")
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"ctl"}, 2, "want the control socket"},
		{[]string{"ctl", sock}, 2, "want the control socket"},
		{[]string{"ctl", sock, "frobnicate"}, 2, "not a ctl verb"},
		{[]string{"ctl", sock, "snapshot", "disk"}, 2, "missing NEWTOP"},
		{[]string{"ctl", sock, "status", "--layer", "x"}, 2, "--layer does not go with status"},
		{[]string{"ctl", sock, "add", "n", "img", "--read-only", "--undo"}, 2, "do not go together"},
		{[]string{"ctl", sock, "add", "n", "img", "--layer", "x"}, 2, "--layer goes with --view-of"},
		{[]string{"ctl", sock, "wait", "x"}, 2, "want the job's number"},
		{[]string{"ctl", sock, "status"}, 1, "no control socket at " + sock},
		{[]string{"ctl", "999999999", "status"}, 1, "not a vhd serve"},
	} {
		r := vhdCode(t, tc.code, tc.args...)
		if !strings.Contains(r.stderr, tc.says) {
			t.Errorf("vhd %v: stderr does not say %q:\n%s", tc.args, tc.says, r)
		}
	}
}

// TestCtlRefusesOtherUsers: the control socket is 0600, so another user
// cannot connect; with its mode opened up (chmod 666), the server still
// refuses them by their peer credentials (SO_PEERCRED), with a JSON 403
// vhd ctl shows; and root, whom no mode stops, is refused by a server
// another user runs.
func TestCtlRefusesOtherUsers(t *testing.T) {
	needChown(t)
	dir := userDir(t, nobody, nobody)
	bin := filepath.Join(dir, "vhd")
	runOK(t, "", "cp", vhdBin, bin)
	env := envWithout([]string{"XDG_RUNTIME_DIR"}, "XDG_RUNTIME_DIR="+dir)

	// Root's server, nobody's client.
	img := filepath.Join(dir, "root.vhd")
	vhdOK(t, "create", "--size", "1M", img)
	ctl := filepath.Join(dir, "root.ctl")
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "root.sock"), "--control", ctl, "--read-only", img)
	if srv.control != ctl {
		t.Fatalf("control:%s, want %s", srv.control, ctl)
	}
	r := vhdAs(t, bin, nobody, env, "ctl", ctl, "status")
	if r.code != 1 || !strings.Contains(r.stderr, "is not yours") {
		t.Errorf("another user on a 0600 control socket:\n%s", r)
	}
	if err := os.Chmod(ctl, 0o666); err != nil {
		t.Fatal(err)
	}
	r = vhdAs(t, bin, nobody, env, "ctl", ctl, "snapshot", "root", filepath.Join(dir, "top.vhd"))
	if r.code != 1 || !strings.Contains(r.stderr, "uid 65534 may not use it") {
		t.Errorf("another user on an open control socket:\n%s", r)
	}
	if _, err := os.Lstat(filepath.Join(dir, "top.vhd")); !os.IsNotExist(err) {
		t.Errorf("the refused request was carried out: %v", err)
	}
	srv.ctl(t, 0, "status")

	// Nobody's server, root's client.
	own := filepath.Join(dir, "own.vhd")
	vhdOK(t, "create", "--size", "1M", own)
	chown(t, own, nobody)
	ctl = filepath.Join(dir, "own.ctl")
	_, stop := serveAs(t, bin, nobody, env, "--socket", filepath.Join(dir, "own.sock"), "--control", ctl, "--read-only", own)
	r = vhdCode(t, 1, "ctl", ctl, "status")
	if !strings.Contains(r.stderr, "uid 0 may not use it") {
		t.Errorf("root on another user's control socket:\n%s", r)
	}
	if r := vhdAs(t, bin, nobody, env, "ctl", ctl, "status"); r.code != 0 {
		t.Errorf("the server's own user:\n%s", r)
	}
	stop()
	srv.stop(t)
	checkOK(t, img)
	checkOK(t, own)
}

// TestCtlAddRemove: images added to a vhd serve that mounts several
// under --fuse ROOT are served over NBD and mounted at ROOT/NAME, the
// same bytes through both; read-only ones refuse writes; a name taken
// is refused; removed, they are gone from NBD and FUSE, their folders
// removed and their images free and clean.
func TestCtlAddRemove(t *testing.T) {
	needFUSE(t)
	need(t, "nbdsh", "nbdcopy", "nbdinfo")
	dir := t.TempDir()
	root := filepath.Join(dir, "fuse")
	var imgs []string
	for _, n := range []string{"a", "b", "c", "d"} {
		p := filepath.Join(dir, n+".vhd")
		vhdOK(t, "create", "--size", "8M", p)
		imgs = append(imgs, p)
	}
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), "--fuse", root, imgs[0], imgs[1])

	r := srv.ctl(t, 0, "add", "c", imgs[2])
	lines := strings.Fields(r.stdout)
	if len(lines) != 2 || lines[1] != "fuse:"+filepath.Join(root, "c") {
		t.Fatalf("add printed:\n%s", r)
	}
	uri := lines[0]
	mine := newRegion(filepath.Join(root, "c", "disk"), 0, 8<<20)
	mine.write(t, 1<<20)
	mine.same(t, uri, "an added image")

	// A read-only one, at a mount point of its own, given relative.
	t.Chdir(dir)
	r = srv.ctl(t, 0, "--json", "add", "d", "d.vhd", "--read-only", "--fuse", "mnt/d")
	var st service.ExportStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if !st.ReadOnly || st.FUSE != filepath.Join(dir, "mnt", "d") || !slices.Equal(st.Layers, []string{imgs[3]}) {
		t.Fatalf("add --read-only: %+v", st)
	}
	if err := clientCmd("nbdinfo", "--is", "read-only", st.URIs[0]).Run(); err != nil {
		t.Errorf("the read-only export is not read-only over NBD: %v", err)
	}
	if err := os.WriteFile(filepath.Join(st.FUSE, "disk"), []byte("x"), 0); err == nil {
		t.Error("the read-only export's FUSE file took a write")
	}
	r = srv.ctl(t, 1, "add", "c", imgs[3])
	if !strings.Contains(r.stderr, `an export named "c" exists already`) {
		t.Errorf("a name taken:\n%s", r)
	}

	srv.ctl(t, 0, "remove", "c")
	srv.ctl(t, 0, "remove", "d")
	for _, gone := range []string{filepath.Join(root, "c"), filepath.Join(dir, "mnt")} {
		if _, err := os.Lstat(gone); !os.IsNotExist(err) {
			t.Errorf("%s is still there after remove: %v", gone, err)
		}
	}
	if err := clientCmd("nbdinfo", uri).Run(); err == nil {
		t.Error("a removed export is still served")
	}
	checkOK(t, imgs[2]) // writable: the lock is free
	if got := readBack(t, imgs[2], 0, len(mine.model)); !bytes.Equal(got, mine.model) {
		t.Error("the removed image does not hold what was written to it")
	}
	srv.ctl(t, 1, "remove", "c")
	srv.stop(t)
	for _, p := range imgs {
		checkOK(t, p)
	}
}

// TestCtlMergeJob: a merge started with --no-wait returns its job at
// once; another merge meanwhile is refused as busy, naming the job;
// cancel stops it (exit 0) and the disk reads as before; the merge run
// again finishes, and wait shows the job's end.
func TestCtlMergeJob(t *testing.T) {
	need(t, "nbdcopy")
	dir := t.TempDir()
	img, top := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "top.vhd")
	vhdOK(t, "create", "--size", "512M", img)
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), img)
	srv.ctl(t, 0, "snapshot", "disk", top)
	data := make([]byte, 384<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>20)
	}
	src := filepath.Join(dir, "data.raw")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := clientCmd("nbdcopy", src, srv.uris[0]).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy: %v\n%s", err, out)
	}

	var j service.Job
	if err := json.Unmarshal([]byte(srv.ctl(t, 0, "--json", "merge", "--no-wait", "disk").stdout), &j); err != nil {
		t.Fatal(err)
	}
	if j.ID == 0 || j.Finished() || j.Kind != service.JobMerge || j.Layer != top {
		t.Fatalf("merge --no-wait: %+v", j)
	}
	id := strconv.FormatInt(j.ID, 10)
	if r := srv.ctl(t, 1, "merge", "disk"); !strings.Contains(r.stderr, "busy") || !strings.Contains(r.stderr, "job "+id) {
		t.Errorf("a merge while one runs:\n%s", r)
	}
	if r := srv.ctl(t, 0, "cancel", id); !strings.Contains(r.stdout, "cancelled") {
		t.Errorf("cancel said:\n%s", r)
	}
	if got := nbdRead(t, srv.uris[0]); !bytes.Equal(got[:len(data)], data) {
		t.Fatal("the disk does not read as before after a cancelled merge")
	}
	r := srv.ctl(t, 0, "merge", "disk")
	if !strings.Contains(r.stdout, "into "+img+"; removed "+top) {
		t.Errorf("the merge run again:\n%s", r)
	}
	if r := srv.ctl(t, 1, "wait", id); !strings.Contains(r.stderr, "cancelled") {
		t.Errorf("wait for the cancelled job:\n%s", r)
	}
	srv.ctl(t, 0, "wait", strconv.FormatInt(j.ID+1, 10))
	if got := nbdRead(t, srv.uris[0]); !bytes.Equal(got[:len(data)], data) {
		t.Fatal("the disk does not read as before after the merge")
	}
	srv.stop(t)
	checkOK(t, img)
}
