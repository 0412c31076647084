package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBackupPullTLS: a vhd serve that requires TLS and client
// certificates (--listen 127.0.0.1:0 --tls-cert --tls-key --tls-ca) is
// pulled over nbds://, full then incremental, over several connections;
// each backup reads as its export does through nbdcopy (a libnbd TLS
// client). Every TLS failure is refused saying which check failed, and
// leaves no DEST: no client certificate, a server CA not trusted, an
// nbd:// URI to the TLS server, an nbds:// URI to a plaintext server,
// --tls-* flags with an nbd:// URI.
func TestBackupPullTLS(t *testing.T) {
	need(t, "nbdsh", "nbdcopy")
	pki, other := t.TempDir(), t.TempDir()
	writeTestPKI(t, pki)
	writeTestPKI(t, other)
	dir, out := t.TempDir(), t.TempDir()
	base := filepath.Join(dir, "disk.vhd")
	vhdOK(t, "create", "--size", "64M", base)
	srv := startServed(t, nil, "--socket", filepath.Join(dir, "nbd.sock"), "--listen", "127.0.0.1:0",
		"--tls-cert", filepath.Join(pki, "server-cert.pem"), "--tls-key", filepath.Join(pki, "server-key.pem"),
		"--tls-ca", filepath.Join(pki, "ca-cert.pem"), base+"=disk")
	certs := "tls-certificates=" + pki
	writePattern(t, srv.uris[0]+"&"+certs, 1, [][2]int64{{0, 3 << 20}, {9<<20 + 4096, 1 << 20}, {40 << 20, 5 << 20}})
	flags := []string{"--tls-ca", filepath.Join(pki, "ca-cert.pem"), "--tls-cert", filepath.Join(pki, "client-cert.pem"),
		"--tls-key", filepath.Join(pki, "client-key.pem")}

	b1 := begin(t, srv.control, "disk")
	uri := tcpURI(t, b1.URIs)
	full := filepath.Join(out, "full.vhd")
	r1 := pull(t, uri, full, flags...)
	if r1.Connections < 2 || r1.UUID != b1.BackupUUID || r1.Planned != 9<<20 {
		t.Errorf("full pull over TLS: %d connection(s), uuid %s (want %s), %d bytes planned (want 9 MiB)", r1.Connections, r1.UUID, b1.BackupUUID, r1.Planned)
	}
	point1 := readBackup(t, full)
	if !bytes.Equal(point1, nbdRead(t, uri+"?"+certs)) {
		t.Fatal("the full backup over TLS differs from the export")
	}
	refusals(t, uri, srv.uris[0], pki, other, flags)
	vhdOK(t, "backup", "end", srv.control, "disk")

	writePattern(t, srv.uris[0]+"&"+certs, 2, [][2]int64{{20 << 20, 1 << 20}, {41 << 20, 512}})
	b2 := begin(t, srv.control, "disk", "--since", full)
	uri = tcpURI(t, b2.URIs)
	incr := filepath.Join(out, "incr.vhd")
	r2 := pull(t, uri, incr, append(flags, "--since", full)...)
	if r2.Planned > 2<<20 || r2.Base != full {
		t.Errorf("incremental over TLS: %d bytes planned for 1 MiB + 512 changed, base %q", r2.Planned, r2.Base)
	}
	if !bytes.Equal(readBackup(t, incr), nbdRead(t, uri+"?"+certs)) {
		t.Fatal("the incremental over TLS, with its base, differs from the export")
	}
	if !bytes.Equal(readBackup(t, full), point1) {
		t.Fatal("the full backup changed under the incremental")
	}
	vhdOK(t, "backup", "end", srv.control, "disk")
	srv.stop(t)
	checkOK(t, full)
	checkOK(t, incr)
	all, _ := filepath.Glob(filepath.Join(dir, "*.vhd"))
	for _, p := range all {
		checkOK(t, p)
	}

	plainDisk := filepath.Join(dir, "plain.vhd")
	vhdOK(t, "create", "--size", "8M", plainDisk)
	plain := startServed(t, nil, "--socket", filepath.Join(dir, "plain.sock"), plainDisk+"=disk")
	b := begin(t, plain.control, "disk")
	dest := filepath.Join(out, "plain.vhd")
	r := vhdCode(t, 1, append([]string{"backup", "pull", strings.Replace(b.URIs[0], "nbd+unix", "nbds+unix", 1), dest}, flags...)...)
	if !strings.Contains(r.stderr, "the server does not offer TLS") || !strings.Contains(r.stderr, "never goes on in plaintext") {
		t.Errorf("nbds:// to a plaintext server: %s", r)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Error("a refused pull left DEST")
	}
	vhdOK(t, "backup", "end", plain.control, "disk")
	plain.stop(t)
	checkOK(t, plainDisk)
}

// refusals pulls uri (a TLS server's, wanting client certificates) in
// every wrong way; each must exit as it should, say why in one line,
// and leave no DEST.
func refusals(t *testing.T, uri, unixURI, pki, other string, flags []string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "refused.vhd")
	ca := filepath.Join(pki, "ca-cert.pem")
	for _, tc := range []struct {
		what string
		args []string
		code int
		says string
	}{
		{"no client certificate", []string{uri, "--tls-ca", ca}, 1, "wants a client certificate and none was given"},
		{"a client certificate of another CA", []string{uri, "--tls-ca", ca, "--tls-cert", filepath.Join(other, "client-cert.pem"),
			"--tls-key", filepath.Join(other, "client-key.pem")}, 1, "refused the client certificate"},
		{"the wrong CA", append([]string{uri}, append(flags, "--tls-ca", filepath.Join(other, "ca-cert.pem"))...), 1,
			"not signed by a CA trusted here"},
		{"a name the certificate does not hold", append([]string{uri, "--tls-server-name", "backup.example"}, flags...), 1,
			`not for the name "backup.example"`},
		{"nbd:// to the TLS server", []string{strings.Replace(uri, "nbds://", "nbd://", 1)}, 1, "use an nbds:// URI, trusting the CA"},
		{"nbd+unix:// to the TLS server", []string{strings.Replace(unixURI, "nbds+unix", "nbd+unix", 1)}, 1, "use an nbds:// URI"},
		{"--tls-ca with nbd://", []string{strings.Replace(uri, "nbds://", "nbd://", 1), "--tls-ca", ca}, 2, "go with an nbds:// or nbds+unix:// URI"},
		{"a certificate without its key", []string{uri, "--tls-ca", ca, "--tls-cert", filepath.Join(pki, "client-cert.pem")}, 1, "give both"},
	} {
		r := vhd(t, append(append([]string{"backup", "pull", "--connections", "2"}, tc.args...), dest)...)
		oneLine := tc.code == 2 || !strings.Contains(strings.TrimSpace(r.stderr), "\n") // usage errors add the usage
		if r.code != tc.code || !strings.Contains(r.stderr, tc.says) || !oneLine {
			t.Errorf("%s: want exit %d saying %q in one line, got %s", tc.what, tc.code, tc.says, r)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Errorf("%s: a refused pull left DEST", tc.what)
		}
	}
}

// tcpURI is the nbds://127.0.0.1:PORT one of a backup's URIs.
func tcpURI(t *testing.T, uris []string) string {
	t.Helper()
	for _, u := range uris {
		if strings.HasPrefix(u, "nbds://127.0.0.1:") {
			return u
		}
	}
	t.Fatalf("no nbds://127.0.0.1 URI among %v", uris)
	return ""
}

// writePattern writes, through uri with nbdsh, each range filled with a
// pattern of seed and its offset, and flushes.
func writePattern(t *testing.T, uri string, seed int, ranges [][2]int64) {
	t.Helper()
	script := fmt.Sprintf("import random\nh.set_uri_allow_local_file(True)\nh.connect_uri(%q)\n", uri)
	for _, r := range ranges {
		script += fmt.Sprintf("random.seed(%d)\nh.pwrite(random.randbytes(%d), %d)\n", int64(seed)<<40|r[0], r[1], r[0])
	}
	script += "h.flush()\n"
	if out, err := clientCmd("nbdsh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("nbdsh writing through %s: %v\n%s", uri, err, out)
	}
}

// TestBackupPullTLSFromQemuNBD: a full pull over nbds+unix:// from
// qemu-nbd with x509 TLS credentials (which verifies client certificates
// by default) reads as the raw file it serves and holds only its data
// (base:allocation, qemu-nbd having no vhdkit:changed); an incremental
// is refused as from any server that lists no changes; without a client
// certificate, and over nbd+unix://, the pull is refused saying why.
func TestBackupPullTLSFromQemuNBD(t *testing.T) {
	need(t, "qemu-nbd")
	pki := t.TempDir()
	writeTestPKI(t, pki)
	raw := filepath.Join(t.TempDir(), "disk.raw")
	want := make([]byte, 32<<20)
	rng := rand.New(rand.NewPCG(5, 5))
	for _, off := range []int64{0, 7<<20 + 512, 30 << 20} {
		for i := range 256 << 10 {
			want[off+int64(i)] = byte(rng.Uint32() | 1)
		}
	}
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 7<<20 + 512, 30 << 20} {
		f.WriteAt(want[off:off+256<<10], off)
	}
	f.Truncate(int64(len(want)))
	f.Close()
	sock := filepath.Join(t.TempDir(), "qemu.sock")
	cmd := exec.Command("qemu-nbd", "--object", "tls-creds-x509,id=tls0,dir="+pki+",endpoint=server", "--tls-creds", "tls0",
		"-f", "raw", "-t", "-k", sock, "-x", "disk", "--shared=8", "-r", raw)
	var qout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qout, &qout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd made no socket: %s", qout.String())
		}
	}
	uri := "nbds+unix:///disk?socket=" + sock
	flags := []string{"--tls-ca", filepath.Join(pki, "ca-cert.pem"), "--tls-cert", filepath.Join(pki, "client-cert.pem"),
		"--tls-key", filepath.Join(pki, "client-key.pem")}
	dest := filepath.Join(t.TempDir(), "full.vhd")
	res := pull(t, uri, dest, flags...)
	if !bytes.Equal(readBackup(t, dest), want) {
		t.Fatal("the backup pulled over TLS from qemu-nbd differs from the file it serves")
	}
	if res.Planned > 4<<20 || res.Point != "" {
		t.Errorf("from qemu-nbd over TLS: %d bytes planned for 768 KiB of data, point %q", res.Planned, res.Point)
	}
	t.Logf("qemu-nbd over TLS: %d bytes planned, %d connection(s)", res.Planned, res.Connections)
	// The same from the URI's folder alone, as libnbd clients write it.
	again := filepath.Join(t.TempDir(), "again.vhd")
	pull(t, uri+"&tls-certificates="+pki, again)
	if !bytes.Equal(readBackup(t, again), want) {
		t.Fatal("the backup pulled with ?tls-certificates=DIR differs from the file")
	}
	for _, tc := range []struct {
		what string
		args []string
		says string
	}{
		{"an incremental", append([]string{uri, "--since", dest}, flags...), "lists no changes since an earlier point"},
		{"no client certificate", []string{uri, "--tls-ca", filepath.Join(pki, "ca-cert.pem")}, "it likely wants a client certificate, and none was given"},
		{"nbd+unix://", []string{"nbd+unix:///disk?socket=" + sock}, "use an nbds:// URI"},
	} {
		r := vhdCode(t, 1, append(append([]string{"backup", "pull"}, tc.args...), filepath.Join(t.TempDir(), "no.vhd"))...)
		t.Logf("%s: %s", tc.what, strings.TrimSpace(r.stderr))
		if !strings.Contains(r.stderr, tc.says) {
			t.Errorf("%s from qemu-nbd over TLS: %s", tc.what, r)
		}
	}
}
