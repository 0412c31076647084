package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBackupPullResumesAfterKill: vhd backup pull killed with SIGKILL
// half-way leaves DEST.part and its state, never DEST; run again, it
// says it resumes, copies only what the state does not hold, and the
// backup equals what the export reads.
func TestBackupPullResumesAfterKill(t *testing.T) { pullResumes(t, syscall.SIGKILL) }

// TestBackupPullResumesAfterCtrlC: the same with SIGINT, which also says
// that what was copied is kept in DEST.part and that running the same
// command again resumes. Before, it said "nothing was left half-done".
func TestBackupPullResumesAfterCtrlC(t *testing.T) { pullResumes(t, syscall.SIGINT) }

func pullResumes(t *testing.T, sig syscall.Signal) {
	need(t, "nbdcopy")
	dir := t.TempDir()
	base := filepath.Join(dir, "disk.vhd")
	vhdOK(t, "create", "--size", "512M", base)
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), base+"=disk")
	fillRandom(t, srv.uris[0], 320<<20)
	b := begin(t, srv.control, "disk")
	dest := filepath.Join(t.TempDir(), "full.vhd")

	cmd := exec.Command(vhdBin, "backup", "pull", "--connections", "1", b.URIs[0], dest)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	state := dest + ".part.state"
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if data, _ := os.ReadFile(state); bytes.Count(data, []byte("\n")) >= 2 {
			break
		}
		if cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("the pull logged no piece: %s", out.String())
		}
	}
	cmd.Process.Signal(sig)
	cmd.Wait()
	if _, err := os.Stat(dest); err == nil {
		t.Fatal("DEST exists after a killed pull")
	}
	if want := "vhd backup: interrupted; what was copied is kept in " + dest + ".part: run the same command again to resume"; sig == syscall.SIGINT && !strings.Contains(out.String(), want) {
		t.Errorf("pull interrupted by SIGINT said:\n%s\nwant %q", out.String(), want)
	}
	r := vhd(t, "backup", "pull", "--json", b.URIs[0], dest)
	if r.code != 0 || !strings.Contains(r.stderr, "resuming") {
		t.Fatalf("rerun: %s", r)
	}
	var res struct {
		Planned int64 `json:"planned_bytes"`
		Resumed int64 `json:"resumed_bytes"`
		Read    int64 `json:"read_bytes"`
	}
	if err := jsonUnmarshal(r.stdout, &res); err != nil {
		t.Fatal(err)
	}
	if res.Resumed == 0 || res.Read+res.Resumed != res.Planned {
		t.Errorf("rerun: resumed %d, read %d, planned %d", res.Resumed, res.Read, res.Planned)
	}
	checkOK(t, dest)
	if !bytes.Equal(readBackup(t, dest), nbdRead(t, b.URIs[0])) {
		t.Fatal("the resumed backup differs from the export")
	}
	for _, left := range []string{dest + ".part", state} {
		if _, err := os.Stat(left); err == nil {
			t.Errorf("%s left behind", left)
		}
	}
	t.Logf("resumed %d of %d bytes", res.Resumed, res.Planned)
	vhdOK(t, "backup", "end", srv.control, "disk")
	srv.stop(t)
	checkOK(t, base)
}

// fillRandom writes n bytes of random data (in 1 MiB pieces with holes
// between) through uri with nbdcopy.
func fillRandom(t *testing.T, uri string, n int64) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "fill.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	b := make([]byte, 1<<20)
	for off := int64(0); off < n; off += 2 << 20 {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		f.WriteAt(b, off)
	}
	f.Truncate(n)
	f.Close()
	if out, err := clientCmd("nbdcopy", raw, uri).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy: %v\n%s", err, out)
	}
	os.Remove(raw)
}

// TestBackupPullFromPeers: a full pull from servers that are not ours,
// nbdkit (file plugin) and qemu-nbd, reads as the file they serve; an
// incremental from them is refused, saying why. (qemu-nbd runs with
// -t: without it, it exits when its first client leaves.)
func TestBackupPullFromPeers(t *testing.T) {
	need(t, "nbdkit", "qemu-nbd")
	raw := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 64<<20)
	rng := rand.New(rand.NewPCG(4, 4))
	for _, off := range []int64{0, 5 << 20, 33<<20 + 512} {
		b := make([]byte, 300<<10)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		f.WriteAt(b, off)
		copy(want[off:], b)
	}
	f.Truncate(64 << 20)
	f.Close()
	for _, peer := range []struct {
		name string
		args func(sock string) []string
		uri  func(sock string) string
	}{
		{"nbdkit", func(s string) []string { return []string{"-f", "-U", s, "file", "file=" + raw} }, func(s string) string { return "nbd+unix:///?socket=" + s }},
		{"qemu-nbd", func(s string) []string {
			return []string{"-f", "raw", "-t", "-k", s, "-x", "disk", "--shared=8", "-r", raw}
		}, func(s string) string { return "nbd+unix:///disk?socket=" + s }},
	} {
		t.Run(peer.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "peer.sock")
			cmd := exec.Command(peer.name, peer.args(sock)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if _, err := os.Stat(sock); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s made no socket", peer.name)
				}
			}
			dest := filepath.Join(t.TempDir(), "full.vhd")
			res := pull(t, peer.uri(sock), dest)
			if !bytes.Equal(readBackup(t, dest), want) {
				t.Fatalf("the backup from %s differs from the file", peer.name)
			}
			if res.Planned > 4<<20 || res.Point != "" {
				t.Errorf("from %s: %d bytes planned for 900 KiB of data, point %q", peer.name, res.Planned, res.Point)
			}
			r := vhdCode(t, 1, "backup", "pull", peer.uri(sock), filepath.Join(t.TempDir(), "incr.vhd"), "--since", dest)
			if !strings.Contains(r.stderr, "lists no changes since an earlier point") {
				t.Errorf("an incremental from %s: %s", peer.name, r)
			}
		})
	}
}

// TestBackupUsage: vhd backup's command line errors exit 2 and name the
// problem; bad input to pull exits 1 saying what is wrong, and leaves no
// DEST.
func TestBackupUsage(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "none.ctl")
	dest := filepath.Join(dir, "b.vhd")
	notVHD := filepath.Join(dir, "prev.vhd")
	if err := os.WriteFile(notVHD, []byte("not a VHD"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"backup"}, 2, "want a verb"},
		{[]string{"backup", "frobnicate"}, 2, "not a backup verb"},
		{[]string{"backup", "begin", sock}, 2, "EXPORT"},
		{[]string{"backup", "end", sock, "disk", "--since", "x"}, 2, "--since does not go with end"},
		{[]string{"backup", "begin", sock, "disk", "--keep"}, 2, "--keep does not go with begin"},
		{[]string{"backup", "pull", "nbd+unix:///d?socket=" + sock, dest, "--connections", "0"}, 2, "want 1 to 64"},
		{[]string{"backup", "begin", sock, "disk", "--since", notVHD}, 1, "not a UUID, and not an image"},
		{[]string{"backup", "list", sock}, 1, "no control socket at " + sock},
		{[]string{"backup", "pull", "http://x/y", dest}, 1, "nbd"},
	} {
		r := vhdCode(t, tc.code, tc.args...)
		if !strings.Contains(r.stderr, tc.says) {
			t.Errorf("vhd %v: stderr does not say %q:\n%s", tc.args, tc.says, r)
		}
	}
	if _, err := os.Stat(dest); err == nil {
		t.Error("a failed pull left DEST")
	}
}
