package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"vhdkit/chains"
	"vhdkit/hypervisor/testguest"
)

// The backup must-shows with a vhd run guest writing: everything goes
// through the command line (vhd run, vhd backup begin/pull/end on the
// run's control socket), and the backups are read with the engine.

// guestRecordScript writes record i (guestRecord) to /dev/vda at
// (i-1)*4096, each fsynced before the next (so each is acknowledged
// before the next is written), printing "wrote i" after it returns and
// pausing 50 ms (so a 64 MiB disk holds a test's minutes of records),
// until a line is typed on the console; then it prints "LAST n", the
// last record acknowledged, and ends (the guest powers off).
const guestRecordScript = `(i=0
while [ ! -e /stop ]; do
  i=$((i+1))
  printf 'record %010d\n' $i | dd of=/dev/vda bs=4096 seek=$((i-1)) conv=sync,fsync 2>/dev/null || { echo "WRITE-FAILED $i"; i=$((i-1)); break; }
  echo "wrote $i"
  sleep 0.05
done
echo "LAST $i") &
echo WRITER-STARTED
read line
touch /stop
wait
`

// guestRecord is what record i of guestRecordScript holds.
func guestRecord(i int) []byte {
	b := make([]byte, recordSize)
	copy(b, fmt.Sprintf("record %010d\n", i))
	return b
}

var wroteRE = regexp.MustCompile(`wrote (\d+)`)

// lastWrote is the last record the guest said it wrote in out.
func lastWrote(out string) int {
	m := wroteRE.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// readChain reads the whole disk the chain at path reads, with the
// engine.
func readChain(t *testing.T, path string) []byte {
	t.Helper()
	c, err := chains.Open(path, chains.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := io.ReadAll(io.NewSectionReader(c, 0, c.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBackupRunGuestRecords is the must-show with a vhd run TCG
// guest: it writes sequence-numbered 4 KiB records to its raw disk, each
// fsynced. A backup begun in the middle (on the run's control socket,
// crash-consistent: the guest has no agent) holds records 1..N with no
// gap and nothing after, N at least the last record the guest had
// acknowledged when begin was run; the next incremental holds only the
// blocks written since (vhdkit:changed lists exactly them, and the pull
// copies exactly them), and the chain of the two reads as the later
// point; after end folds each point back, the live disk holds every
// record the guest acknowledged; everything checks clean.
func TestBackupRunGuestRecords(t *testing.T) {
	need(t, "nbdinfo", "nbdcopy", "qemu-system-x86_64")
	dir, out := t.TempDir(), t.TempDir()
	img := filepath.Join(dir, "disk.vhd")
	vhdOK(t, "create", "--size", "64M", img)
	kernel, initrd, err := testguest.Build(dir, guestRecordScript, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := startRunTyped(t, filepath.Join(dir, "console.txt"), "--disk", img, "--kernel", kernel, "--initrd", initrd,
		"--append", testguest.Append, "--accel", "tcg", "--memory", "256M", "--qemu-arg=-no-reboot")
	waitWrote(t, r, 10, guestTimeout)

	acked := lastWrote(readFile(t, r.console))
	b1 := begin(t, r.control, "disk0")
	if b1.Since != nil || b1.Consistency != "crash-consistent" {
		t.Fatalf("the first backup of a guest with no agent: %+v", b1)
	}
	full := filepath.Join(out, "full.vhd")
	pull(t, b1.URIs[0], full)
	n1 := recordsOf(t, readChain(t, full), guestRecord, "the full backup")
	if n1 < acked {
		t.Fatalf("the full backup holds records 1..%d, but the guest had acknowledged %d before begin", n1, acked)
	}
	vhdOK(t, "backup", "end", r.control, "disk0")
	waitWrote(t, r, n1+10, time.Minute)

	acked = lastWrote(readFile(t, r.console))
	b2 := begin(t, r.control, "disk0")
	if b2.Since == nil || b2.Since.UUID != b1.Point.UUID {
		t.Fatalf("the second backup is not an incremental since the first's point: %+v", b2)
	}
	changed := changedMap(t, b2.URIs[0])
	incr := filepath.Join(out, "incr.vhd")
	r2 := pull(t, b2.URIs[0], incr, "--since", full)
	point2 := readChain(t, incr)
	n2 := recordsOf(t, point2, guestRecord, "the incremental with its base")
	if n2 < acked || n2 <= n1 {
		t.Fatalf("the incremental holds records 1..%d; the full backup 1..%d, and the guest had acknowledged %d before begin", n2, n1, acked)
	}
	if !bytes.Equal(point2, nbdRead(t, b2.URIs[0])) {
		t.Fatal("the chain of the two backups does not read as the later point's export")
	}
	between := int64(n2-n1) * recordSize
	if want := [2]int64{int64(n1) * recordSize, int64(n2) * recordSize}; len(changed) != 1 || changed[0] != want {
		t.Errorf("vhdkit:changed lists %v, want %v (records %d..%d)", changed, want, n1+1, n2)
	}
	// The file: the records' sectors, the sector bitmap of the one or two
	// 2 MiB blocks they touch, and the headers and BAT (a few KiB).
	if r2.Planned != between || r2.Written != between || r2.FileBytes > between+64<<10 {
		t.Errorf("incremental: planned %d, written %d, file %d bytes, for %d bytes of records", r2.Planned, r2.Written, r2.FileBytes, between)
	}
	t.Logf("full: %d records; incremental: %d records, %d bytes, file %d bytes", n1, n2-n1, between, r2.FileBytes)
	vhdOK(t, "backup", "end", r.control, "disk0")
	at := waitWrote(t, r, n2+5, time.Minute)

	fmt.Fprintln(r.typed, "stop")
	r.waitConsole(t, "LAST ", at, time.Minute)
	if err := r.wait(t); err != nil {
		t.Fatalf("vhd run: %v; console:\n%s", err, readFile(t, r.console))
	}
	con := readFile(t, r.console)
	if strings.Contains(con, "WRITE-FAILED") {
		t.Fatalf("a write of the guest failed:\n%s", con)
	}
	last := lastLine(t, con)
	if got := recordsOf(t, readChain(t, liveTop(t, dir)), guestRecord, "the live disk"); got != last {
		t.Errorf("the live disk holds records 1..%d, the guest acknowledged %d", got, last)
	}
	checkAll(t, dir, out)
}

// waitWrote waits until the guest says it wrote record n, and returns
// the console's length then.
func waitWrote(t *testing.T, r *running, n int, timeout time.Duration) int {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		con := readFile(t, r.console)
		if lastWrote(con) >= n {
			return len(con)
		}
		if time.Now().After(deadline) || strings.Contains(con, "LAST ") {
			t.Fatalf("the guest did not write record %d within %v; console:\n%s", n, timeout, con)
		}
	}
}

var lastRE = regexp.MustCompile(`LAST (\d+)`)

// lastLine is the number of the guest's "LAST n" line.
func lastLine(t *testing.T, con string) int {
	t.Helper()
	m := lastRE.FindStringSubmatch(con)
	if m == nil {
		t.Fatalf("the guest printed no LAST line:\n%s", con)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// liveTop is the top of the live chain in dir: the marker layer the
// last backup cut (STEM.since-UUID.vhd), the one leaf of vhd tree there.
func liveTop(t *testing.T, dir string) string {
	t.Helper()
	leaves := treeLeaves(t, dir)
	if len(leaves) != 1 {
		t.Fatalf("the images in %s have leaves %v, want one live top", dir, leaves)
	}
	return leaves[0]
}

// checkAll runs vhd check on every image in dirs.
func checkAll(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		all, _ := filepath.Glob(filepath.Join(d, "*.vhd"))
		for _, p := range all {
			checkOK(t, p)
		}
	}
}

// guestFSScript mounts the ext4 filesystem on /dev/vda and writes: file
// i, created and fsynced, printing "wrote i" after the fsync returned.
// At the first line typed on the console it starts the guest agent
// (with a freeze hook that prints on the console) and says
// AGENT-READY once the agent wrote its pid file; at the second it stops
// writing, unmounts the filesystem and ends (the guest powers off).
const guestFSScript = `mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || echo MOUNT-FAILED
(i=0
while [ ! -e /stop ]; do
  i=$((i+1))
  echo "file $i" | dd of=/mnt/f$i conv=fsync 2>/dev/null || { echo "WRITE-FAILED $i"; break; }
  echo "wrote $i"
  sleep 0.1
done) &
writer=$!
echo WRITER-STARTED
read line
` + testguest.StartAgent + `n=0; while [ ! -e /tmp/qga.pid ] && [ $n -lt 100 ]; do n=$((n+1)); sleep 0.2; done
echo AGENT-READY
read line
touch /stop
wait $writer
umount /mnt && echo UNMOUNTED
`

// TestBackupRunGuestQuiesced is the must-show with
// qemu-guest-agent: a vhd run TCG guest writes files to an ext4
// filesystem on /dev/vda, each fsynced. First with no agent running: vhd
// backup begin on the run's control socket says crash-consistent, and
// that backup's filesystem has its journal to replay (so the check
// below can tell). Then with Debian's qemu-ga running: begin says the
// point is quiesced, the guest's freeze hook ran before it returned and
// its thaw hook after, and the guest goes on writing; the pulled backup,
// converted to raw, passes e2fsck -fn with no journal to replay
// (dumpe2fs shows no needs_recovery) and holds every file the guest had
// fsynced before begin. After end the guest unmounts cleanly, and
// everything checks clean.
func TestBackupRunGuestQuiesced(t *testing.T) {
	need(t, "qemu-system-x86_64", "qemu-ga", "mkfs.ext4", "e2fsck", "dumpe2fs", "debugfs")
	qga, _ := exec.LookPath("qemu-ga")
	dir, out := t.TempDir(), t.TempDir()
	img := filepath.Join(dir, "fs.vhd")
	ext4VHD(t, img, 64<<20)
	kernel, initrd, err := testguest.BuildGuest(dir, testguest.Guest{Script: guestFSScript, Programs: []string{qga}, Modules: testguest.Ext4Modules})
	if err != nil {
		t.Fatal(err)
	}
	r := startRunTyped(t, filepath.Join(dir, "console.txt"), "--disk", img, "--kernel", kernel, "--initrd", initrd,
		"--append", testguest.Append, "--accel", "tcg", "--memory", "256M", "--qemu-arg=-no-reboot")
	waitWrote(t, r, 5, guestTimeout)
	if con := readFile(t, r.console); strings.Contains(con, "MOUNT-FAILED") {
		t.Fatalf("the guest could not mount its ext4:\n%s", con)
	}

	crash := begin(t, r.control, "disk0")
	if crash.Consistency != "crash-consistent" {
		t.Fatalf("begin before the guest's agent runs: %+v", crash)
	}
	crashRaw := pullRaw(t, crash.URIs[0], filepath.Join(out, "crash.vhd"))
	vhdOK(t, "backup", "end", r.control, "disk0")
	if hdr := dumpe2fsHeader(t, crashRaw); !strings.Contains(hdr, "needs_recovery") {
		t.Fatalf("a crash-consistent backup of the mounted ext4 has no journal to replay: the check cannot tell\n%s", hdr)
	}

	fmt.Fprintln(r.typed, "agent")
	r.waitConsole(t, "AGENT-READY", 0, time.Minute)
	con := readFile(t, r.console)
	acked, mark := lastWrote(con), len(con)
	b := begin(t, r.control, "disk0")
	if b.Consistency != "quiesced" || b.Warning != "" {
		t.Fatalf("begin with the guest's agent running: %+v; console:\n%s", b, readFile(t, r.console))
	}
	after := readFile(t, r.console)[mark:]
	freeze, thaw := strings.Index(after, "HOOK freeze"), strings.Index(after, "HOOK thaw")
	if freeze < 0 || thaw < freeze {
		t.Fatalf("the guest's freeze hook did not run, then its thaw hook, by the time begin returned:\n%s", after)
	}
	thawedAt := lastWrote(after[:thaw])
	waitWrote(t, r, thawedAt+3, time.Minute) // thawed: the guest writes on

	raw := pullRaw(t, b.URIs[0], filepath.Join(out, "full.vhd"))
	fsckNothingToReplay(t, raw)
	if got := debugfsCat(t, raw, fmt.Sprintf("/f%d", acked)); got != fmt.Sprintf("file %d\n", acked) {
		t.Errorf("the backup's /f%d holds %q: the guest had fsynced it before begin", acked, got)
	}
	vhdOK(t, "backup", "end", r.control, "disk0")

	fmt.Fprintln(r.typed, "stop")
	if err := r.wait(t); err != nil {
		t.Fatalf("vhd run: %v; console:\n%s", err, readFile(t, r.console))
	}
	if con := readFile(t, r.console); !strings.Contains(con, "UNMOUNTED") || strings.Contains(con, "WRITE-FAILED") {
		t.Fatalf("the guest's writes or its unmount failed:\n%s", con)
	}
	checkAll(t, dir, out)
}

// ext4VHD makes a dynamic VHD of size bytes holding a fresh ext4
// filesystem: mkfs.ext4 on a raw file, then vhd convert.
func ext4VHD(t *testing.T, path string, size int64) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "fs.raw")
	if err := os.WriteFile(raw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", raw).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	vhdOK(t, "convert", "--to", "dynamic", raw, path)
}

// fsckNothingToReplay fails unless e2fsck -fn finds the filesystem in
// raw clean with no journal to replay, and its superblock does not say
// needs_recovery.
func fsckNothingToReplay(t *testing.T, raw string) {
	t.Helper()
	out, err := exec.Command("e2fsck", "-fn", raw).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("journal")) {
		t.Fatalf("e2fsck -fn of the backup: %v\n%s", err, out)
	}
	if hdr := dumpe2fsHeader(t, raw); strings.Contains(hdr, "needs_recovery") {
		t.Fatalf("the backup's superblock says needs_recovery:\n%s", hdr)
	}
}

// dumpe2fsHeader is what dumpe2fs -h says of the ext4 in raw.
func dumpe2fsHeader(t *testing.T, raw string) string {
	t.Helper()
	hdr, err := exec.Command("dumpe2fs", "-h", raw).CombinedOutput()
	if err != nil || !bytes.Contains(hdr, []byte("Filesystem features:")) {
		t.Fatalf("dumpe2fs -h %s: %v\n%s", raw, err, hdr)
	}
	return string(hdr)
}

// pullRaw pulls a full backup of uri into dest and converts it to a raw
// file beside it, whose path it returns.
func pullRaw(t *testing.T, uri, dest string) string {
	t.Helper()
	pull(t, uri, dest)
	raw := strings.TrimSuffix(dest, ".vhd") + ".raw"
	vhdOK(t, "convert", "--to", "raw", dest, raw)
	return raw
}

// debugfsCat is the contents of the file at path in the ext4 raw.
func debugfsCat(t *testing.T, raw, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, raw).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}
