package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// TestReadersTakeNBD: info, compare, map and measure read an NBD export
// named by its URI, as qemu-img's do: info says its size, that it is
// read-only and has block status; the export of an image compares equal to
// the image and differs from another at the first differing byte, its
// map shows the image's data and zeros, and it measures as the image
// does; over TLS with --tls-ca too. -f vpc with a URI is refused (an
// export is raw), and --tls-ca with no nbds:// URI.
func TestReadersTakeNBD(t *testing.T) {
	dir := t.TempDir()
	img, other := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "other.vhd")
	vhdOK(t, "create", "--size", "32M", img)
	writeChain(t, img, bytes.Repeat([]byte{7}, 1<<20), 3<<20)
	writeChain(t, img, bytes.Repeat([]byte{9}, 8192), 20<<20+4096)
	vhdOK(t, "convert", "--to", "dynamic", img, other)
	writeChain(t, other, []byte{1}, 20<<20+8192)
	srv := startServed(t, nil, "--read-only", "--socket", filepath.Join(dir, "nbd.sock"), img+"=disk")
	uri := srv.uris[0]

	vhdOK(t, "compare", "-U", img, uri)
	var ei struct {
		Format      string
		Size        int64 `json:"virtual_size"`
		ReadOnly    bool  `json:"read_only"`
		BlockStatus bool  `json:"block_status"`
	}
	vhdJSON(t, &ei, "info", "--json", uri)
	if ei.Format != "raw" || ei.Size != 32<<20 || !ei.ReadOnly || !ei.BlockStatus {
		t.Errorf("info --json of the export: %+v", ei)
	}
	if r := vhdCode(t, 1, "compare", "-U", other, uri); !strings.Contains(r.stdout, "offset 20979712") {
		t.Errorf("compare with a differing image: %s", r)
	}
	vhdCode(t, 2, "compare", "-U", "-F", "vpc", img, uri)

	pki := t.TempDir()
	writeTestPKI(t, pki)
	tlsSrv := startServed(t, nil, "--read-only", "--listen", "127.0.0.1:0", "--tls-cert", filepath.Join(pki, "server-cert.pem"),
		"--tls-key", filepath.Join(pki, "server-key.pem"), img+"=disk")
	ca := filepath.Join(pki, "ca-cert.pem")
	vhdOK(t, "compare", "-U", "--tls-ca", ca, img, tcpURI(t, tlsSrv.uris))
	vhdCode(t, 2, "compare", "-U", "--tls-ca", ca, img, other) // no nbds:// URI to use it
	tlsSrv.stop(t)

	if f, n := mapRuns(t, "-U", img), mapRuns(t, uri); !slices.Equal(f, n) {
		t.Errorf("map of the export differs from the image's:\n%v\n%v", n, f)
	}
	var mf, mn map[string]any
	vhdJSON(t, &mf, "measure", "--output=json", "-U", "--image", img)
	vhdJSON(t, &mn, "measure", "--output=json", "--image", uri)
	if mf["required"] != mn["required"] {
		t.Errorf("measure of the export %v, of the image %v", mn, mf)
	}
	srv.stop(t)
	checkOK(t, img)
	checkOK(t, other)
}

// mapRuns is vhd map --json of src as runs of "start+length data|zero",
// neighbours of one kind joined (a file's map splits where the data's
// place in the file jumps).
func mapRuns(t *testing.T, args ...string) []string {
	t.Helper()
	var m []struct {
		Start, Length int64
		Data          bool
	}
	vhdJSON(t, &m, append([]string{"map", "--json"}, args...)...)
	var runs []string
	var start, end int64
	data := false
	flush := func() {
		if end > start {
			runs = append(runs, fmt.Sprintf("%d+%d %v", start, end-start, data))
		}
	}
	for _, e := range m {
		if e.Data != data || e.Start != end {
			flush()
			start, data = e.Start, e.Data
		}
		end = e.Start + e.Length
	}
	flush()
	return runs
}
