package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeExposureRule: TCP beyond this machine needs TLS client
// certificates or --insecure-tcp; loopback needs neither. Checked on the
// options, so nothing listens.
func TestServeExposureRule(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		ok    bool
	}{
		{[]string{"--listen", ":0"}, true}, // 127.0.0.1 by default
		{[]string{"--listen", "127.0.0.1:0"}, true},
		{[]string{"--listen", "[::1]:0"}, true},
		{[]string{"--listen", "localhost:0"}, true},
		{[]string{"--listen", "0.0.0.0:0"}, false},
		{[]string{"--listen", "[::]:0"}, false},
		{[]string{"--listen", "192.0.2.7:10809"}, false},
		{[]string{"--listen", "0.0.0.0:0", "--tls-cert", "c", "--tls-key", "k"}, false}, // TLS lets anyone in
		{[]string{"--listen", "0.0.0.0:0", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "ca"}, true},
		{[]string{"--listen", "0.0.0.0:0", "--insecure-tcp"}, true},
		{[]string{"--socket", "/tmp/x.sock"}, true},
	} {
		fs := newFlagSet(serveCmd)
		serveCmd.setup(fs)
		if err := fs.Parse(tc.flags); err != nil {
			t.Fatal(err)
		}
		o := &serveOptions{listenGiven: fs.Changed("listen")}
		o.listen, _ = fs.GetString("listen")
		o.insecureTCP, _ = fs.GetBool("insecure-tcp")
		o.tlsCA, _ = fs.GetString("tls-ca")
		err := o.checkExposure()
		if (err == nil) != tc.ok {
			t.Errorf("%v: %v, want ok=%v", tc.flags, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--insecure-tcp") {
			t.Errorf("%v: the refusal does not name --insecure-tcp: %v", tc.flags, err)
		}
	}
}

// TestServeRefusesOpenTCP: vhd serve --listen 0.0.0.0:0 without client
// certificates is a usage error naming the flags that allow it, before
// anything listens. Before, it served every network the host is on.
func TestServeRefusesOpenTCP(t *testing.T) {
	img := newImage(t, 1<<20)
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		out, err := exec.Command(vhdBin, "serve", "--listen", addr, img).CombinedOutput()
		if exitCode(err) != exitUsage || !strings.Contains(string(out), "--insecure-tcp") || !strings.Contains(string(out), "--tls-ca") {
			t.Errorf("vhd serve --listen %s: %v\n%s", addr, err, out)
		}
	}
}

// TestServeTLSClientCertsOverTCP: over TCP with --tls-ca, a libnbd client
// verifying the server and presenting a certificate from the CA reads
// and writes (and qemu-img gets in); one without a certificate, or with
// one from another CA, is refused.
func TestServeTLSClientCertsOverTCP(t *testing.T) {
	need(t, "nbdinfo", "nbdsh", "qemu-img")
	good, other, caOnly := t.TempDir(), t.TempDir(), t.TempDir()
	writeTestPKI(t, good)
	writeTestPKI(t, other)
	copyFile(t, filepath.Join(good, "ca-cert.pem"), filepath.Join(caOnly, "ca-cert.pem"))
	img := newImage(t, 8<<20)
	srv, uri := startServe(t, nil, "--listen", "127.0.0.1:0", "--tls-cert", filepath.Join(good, "server-cert.pem"),
		"--tls-key", filepath.Join(good, "server-key.pem"), "--tls-ca", filepath.Join(good, "ca-cert.pem"), img)
	if !strings.HasPrefix(uri, "nbds://127.0.0.1:") {
		t.Fatalf("URI %q", uri)
	}
	// A client of the other CA trusts the server's CA but presents its
	// own certificate.
	for _, f := range []string{"ca-cert.pem"} {
		copyFile(t, filepath.Join(good, f), filepath.Join(other, f))
	}
	for _, bad := range []string{"?tls-certificates=" + caOnly, "?tls-certificates=" + other} {
		out, err := clientCmd("nbdinfo", uri+bad).CombinedOutput()
		t.Logf("nbdinfo %s: %v: %s", uri+bad, err, out)
		if err == nil {
			t.Errorf("nbdinfo %s was let in:\n%s", uri+bad, out)
		}
	}
	if out, err := clientCmd("nbdinfo", "--size", uri+"?tls-certificates="+good).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "8388608" {
		t.Errorf("nbdinfo with a certificate from the CA: %v\n%s", err, out)
	}
	out, err := clientCmd("nbdsh", "-c", fmt.Sprintf(`
h.set_uri_allow_local_file(True)
h.connect_uri(%q)
assert h.get_tls_negotiated()
h.pwrite(b"over tls", 4096, nbd.CMD_FLAG_FUA)
print(h.pread(8, 4096).decode())
`, uri+"?tls-certificates="+good)).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "over tls" {
		t.Fatalf("nbdsh with a certificate from the CA: %v\n%s", err, out)
	}
	// qemu, as docs/CLI.md tells it.
	port := strings.TrimPrefix(strings.Split(uri, "/")[2], "127.0.0.1:")
	if out, err := exec.Command("qemu-img", "info", "--output=json", "--object", "tls-creds-x509,id=tls0,dir="+good+",endpoint=client",
		"--image-opts", "driver=nbd,host=127.0.0.1,port="+port+",export=disk,tls-creds=tls0").CombinedOutput(); err != nil || !strings.Contains(string(out), `"virtual-size": 8388608`) {
		t.Errorf("qemu-img info over TLS with a client certificate: %v\n%s", err, out)
	}
	stopServe(t, srv)
	checkClean(t, img)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", from, to).CombinedOutput(); err != nil {
		t.Fatal(fmt.Errorf("cp: %v: %s", err, out))
	}
}
