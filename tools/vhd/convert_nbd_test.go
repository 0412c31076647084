package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/engine"
)

// TestConvertFromNBD: vhd convert takes an NBD URI as SRC, as qemu-img
// convert does. From a vhd serve (over a unix socket, and over TLS on
// 127.0.0.1) and from qemu-nbd, into dynamic, fixed and raw: each copy
// reads as the served image, only its data is read and written (the raw
// copy is sparse), and the VHDs pass check. A URI nobody answers, or
// TLS the server does not accept, leaves no DST and no temporary file.
func TestConvertFromNBD(t *testing.T) {
	need(t, "qemu-nbd")
	dir, out := t.TempDir(), t.TempDir()
	src := filepath.Join(dir, "disk.vhd")
	vhdOK(t, "create", "--size", "64M", src)
	img, err := engine.Open(src, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, off := range []int64{0, 5<<20 + 512, 40 << 20} {
		img.WriteAt(bytes.Repeat([]byte{byte(i + 1), 0x5a}, 300<<10), off)
	}
	img.WriteAt(make([]byte, 2<<20), 20<<20) // allocated zeros
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}

	pki := t.TempDir()
	writeTestPKI(t, pki)
	srv := startServed(t, nil, "--read-only", "--socket", filepath.Join(dir, "nbd.sock"), "--listen", "127.0.0.1:0",
		"--tls-cert", filepath.Join(pki, "server-cert.pem"), "--tls-key", filepath.Join(pki, "server-key.pem"), src+"=disk")
	unixURI := srv.uris[0] + "&tls-certificates=" + pki // libnbd's folder of certificates
	for _, to := range []string{"dynamic", "fixed", "raw"} {
		dst := filepath.Join(out, "unix-"+to+".img")
		var res map[string]any
		vhdJSON(t, &res, "convert", "--json", "--to", to, unixURI, dst)
		if res["source_type"] != "NBD export" || res["data_written"].(float64) > 4<<20 {
			t.Errorf("--to %s: %v; want an NBD export and under 4 MiB written (900 KiB of data)", to, res)
		}
		sameDisk(t, src, dst)
	}
	if st, _ := os.Stat(filepath.Join(out, "unix-raw.img")); st.Sys().(*syscall.Stat_t).Blocks*512 > 4<<20 {
		t.Errorf("the raw copy takes %d bytes: holes were written", st.Sys().(*syscall.Stat_t).Blocks*512)
	}

	tlsURI := tcpURI(t, srv.uris)
	dst := filepath.Join(out, "tls.vhd")
	vhdOK(t, "convert", "--to", "dynamic", "--tls-ca", filepath.Join(pki, "ca-cert.pem"), tlsURI, dst)
	sameDisk(t, src, dst)
	other := t.TempDir()
	writeTestPKI(t, other)
	refused := filepath.Join(out, "refused.vhd")
	r := vhdCode(t, 1, "convert", "--to", "dynamic", "--tls-ca", filepath.Join(other, "ca-cert.pem"), tlsURI, refused)
	if !strings.Contains(r.stderr, "certificate") {
		t.Errorf("a server certificate from another CA: %s", r)
	}
	srv.stop(t)
	vhdCode(t, 1, "convert", "--to", "dynamic", unixURI, refused)
	vhdCode(t, 2, "convert", "--to", "dynamic", "--from", "vhd", unixURI, refused)

	sock := filepath.Join(dir, "q.sock")
	q := exec.Command("qemu-nbd", "--read-only", "--persistent", "--format", "vpc", "--socket", sock, src)
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { q.Process.Kill(); q.Wait() }()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	dst = filepath.Join(out, "qemu.vhd")
	vhdOK(t, "convert", "--to", "dynamic", "nbd+unix:///?socket="+sock, dst)
	sameDisk(t, src, dst)

	left, _ := os.ReadDir(out)
	for _, e := range left {
		if strings.HasPrefix(e.Name(), ".") || strings.HasPrefix(e.Name(), "refused") {
			t.Errorf("left in DST's folder: %s", e.Name())
		}
	}
	for _, e := range left {
		if strings.HasSuffix(e.Name(), ".vhd") {
			checkOK(t, filepath.Join(out, e.Name()))
		}
	}
}

// sameDisk fails unless vhd compare finds a and b the same disk.
func sameDisk(t *testing.T, a, b string) {
	t.Helper()
	if r := vhd(t, "compare", "-U", a, b); r.code != 0 {
		t.Errorf("%s and %s differ: %s", a, b, r)
	}
}
