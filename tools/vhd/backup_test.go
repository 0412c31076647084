package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vhdkit/service"
)

// TestBackupUnderWrites is the must-show with an NBD client: a
// client appends sequence-numbered 4 KiB records continuously while a
// full backup and then an incremental are taken through a real vhd
// serve. Each backup holds records 1..N with no gap and nothing after N,
// and equals what its frozen export read (over NBD and over FUSE); the
// incremental holds exactly the records written between the points, and
// nbdinfo --map=vhdkit:changed says so; the chain of the two reads as
// the later point, before and after 'vhd merge' folds it; after each
// end, every write the client made is in the live disk.
func TestBackupUnderWrites(t *testing.T) {
	need(t, "nbdsh", "nbdinfo", "nbdcopy")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine: the backup's FUSE view cannot be mounted")
	}
	dir, out := t.TempDir(), t.TempDir()
	base, spare := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "spare.vhd")
	vhdOK(t, "create", "--size", "256M", base)
	vhdOK(t, "create", "--size", "1M", spare)
	root := filepath.Join(t.TempDir(), "fuse")
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), "--fuse", root, base+"=disk", spare+"=spare")
	writer := startRecords(t, srv.uris[0], 0, recordLimit)
	time.Sleep(2 * time.Second)

	b1 := begin(t, srv.control, "disk")
	if b1.Since != nil || b1.Consistency != "crash-consistent" || b1.FUSE != filepath.Join(root, "disk-backup") {
		t.Fatalf("first backup: %+v", b1)
	}
	full := filepath.Join(out, "full.vhd")
	r1 := pull(t, b1.URIs[0], full)
	point1 := readBackup(t, full)
	n1 := recordsIn(t, point1, "the full backup")
	sameAsExport(t, point1, b1.URIs[0], filepath.Join(b1.FUSE, "disk"), "the full backup")
	if r1.Planned != int64(n1)*recordSize || r1.UUID != b1.BackupUUID {
		t.Errorf("full pull: %d bytes planned for %d records, uuid %s (want %s)", r1.Planned, n1, r1.UUID, b1.BackupUUID)
	}
	// The point stays under a new top: end names it, so the next serve
	// is not started on the frozen point.
	if r := vhdOK(t, "backup", "end", srv.control, "disk"); !strings.Contains(r.stdout, "writes go to "+dir+"/disk.since-") || !strings.Contains(r.stdout, "serve or mount that file next time") {
		t.Errorf("backup end does not say where writes go now:\n%s", r)
	}
	time.Sleep(2 * time.Second)

	b2 := begin(t, srv.control, "disk", "--since", full)
	if b2.Since == nil || b2.Since.UUID != b1.Point.UUID {
		t.Fatalf("second backup: %+v", b2)
	}
	changed := changedMap(t, b2.URIs[0])
	shownRunning(t, srv, b1, b2)
	incr := filepath.Join(out, "incr.vhd")
	r2 := pull(t, b2.URIs[0], incr, "--since", full)
	point2 := readBackup(t, incr)
	n2 := recordsIn(t, point2, "the incremental with its base")
	sameAsExport(t, point2, b2.URIs[0], filepath.Join(b2.FUSE, "disk"), "the incremental")
	if n2 <= n1 || n2 >= recordLimit {
		t.Fatalf("records at the points: %d, %d: none between them, or the writer had stopped (at %d) before the second", n1, n2, recordLimit)
	}
	want := [][2]int64{{int64(n1) * recordSize, int64(n2) * recordSize}}
	if len(changed) != 1 || changed[0] != want[0] {
		t.Errorf("vhdkit:changed lists %v, want %v (records %d..%d)", changed, want, n1+1, n2)
	}
	if r2.Planned != int64(n2-n1)*recordSize || r2.Written != r2.Planned || r2.FileBytes > r2.Planned+8<<20 {
		t.Errorf("incremental: planned %d, written %d, file %d bytes, for %d bytes of records", r2.Planned, r2.Written, r2.FileBytes, (n2-n1)*recordSize)
	}
	t.Logf("full: %d records, %d bytes, file %d; incremental: %d records, %d bytes, file %d", n1, r1.Planned, r1.FileBytes, n2-n1, r2.Planned, r2.FileBytes)
	if !bytes.Equal(readBackup(t, full), point1) {
		t.Fatal("the full backup changed under the incremental")
	}
	var end service.BackupEnd
	vhdJSON(t, &end, "backup", "end", "--json", srv.control, "disk")
	if end.Point != b2.Point || end.Kept || end.Job == nil || end.Job.State != service.JobSucceeded || end.Job.Layer != b2.Point.Path {
		t.Errorf("end --json of a point with a parent: %+v, job %+v", end, end.Job)
	}
	writer.finish(t)
	last := lastRecord(t, writer)
	srv.stop(t)

	// Restore: vhd merge folds the incremental into the full backup,
	// which then reads as the later point.
	vhdOK(t, "merge", incr)
	if !bytes.Equal(readBackup(t, full), point2) {
		t.Fatal("after vhd merge, the backup does not read as the later point")
	}
	checkOK(t, full)
	leaves := treeLeaves(t, dir)
	live := ""
	for _, l := range leaves {
		if strings.Contains(l, ".since-") {
			live = l
		}
	}
	if live == "" {
		t.Fatalf("no marker top among %v", leaves)
	}
	if got := recordsIn(t, readBackup(t, live), "the live disk"); got != last {
		t.Errorf("the live disk holds %d records, the client wrote %d", got, last)
	}
	all, _ := filepath.Glob(filepath.Join(dir, "*.vhd"))
	for _, p := range all {
		checkOK(t, p)
	}
	if len(all) != 3 {
		t.Errorf("images left: %v (want the base, the marker top, spare)", all)
	}
}

// recordLimit is where the writer stops if not told to (234 MiB of the
// 256 MiB disk).
const recordLimit = 60000

// sameAsExport compares a restored backup with what its export reads,
// over NBD (nbdcopy) and through its FUSE file.
func sameAsExport(t *testing.T, restored []byte, uri, fuseFile, what string) {
	t.Helper()
	if !bytes.Equal(restored, nbdRead(t, uri)) {
		t.Fatalf("%s differs from what its export reads over NBD", what)
	}
	viaFUSE, err := os.ReadFile(fuseFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(restored, viaFUSE) {
		t.Fatalf("%s differs from what its export reads over FUSE", what)
	}
}

// lastRecord is the last record the finished writer wrote.
func lastRecord(t *testing.T, c *nbdClient) int {
	t.Helper()
	f := strings.Fields(c.out.String())
	n := 0
	for _, ch := range f[len(f)-1] {
		n = n*10 + int(ch-'0')
	}
	return n
}

// shownRunning checks that vhd ctl status and vhd backup list show the
// running backup b2 (an incremental since b1's point), and that the list
// shows b1's point, still a layer of the chain.
func shownRunning(t *testing.T, srv *served, b1, b2 service.Backup) {
	t.Helper()
	line := "backup disk-backup of export disk: point " + b2.Point.Path + " (UUID " + b2.Point.UUID + "), crash-consistent, changes since " + b1.Point.UUID
	if st := srv.ctl(t, 0, "status"); !strings.Contains(st.stdout, line) {
		t.Errorf("vhd ctl status does not show the backup (%q):\n%s", line, st.stdout)
	}
	var st service.Status
	vhdJSON(t, &st, "ctl", srv.control, "--json", "status")
	if len(st.Backups) != 1 || st.Backups[0].Point != b2.Point || st.Backups[0].Since == nil {
		t.Errorf("status --json backups: %+v", st.Backups)
	}
	list := vhdOK(t, "backup", "list", srv.control)
	if !strings.Contains(list.stdout, line) || !strings.Contains(list.stdout, b1.Point.UUID+"  the base") {
		t.Errorf("vhd backup list:\n%s", list.stdout)
	}
}
