package nbdserve

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
)

// These tests drive the server with the real NBD clients users have:
// libnbd's nbdinfo, nbdcopy and nbdsh, QEMU's qemu-img and qemu-io, and
// fio's nbd engine. scripts/setup.sh installs them; a missing one fails
// the test rather than skipping it.

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/setup.sh", tool)
		}
	}
}

// run runs a command and returns its standard output; failing output is
// reported in full.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	// Clients may leave files behind (fio's verify state).
	cmd.Dir = t.TempDir()
	// nbdsh runs "python3" from PATH and needs the system one, which has
	// libnbd's bindings (python3-libnbd).
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin:"+os.Getenv("PATH"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// served creates a dynamic image of size bytes, lets prepare write to it,
// and serves it (as export "disk", also the default) until the test ends.
// It returns the socket path and the image path; closeAndCheck ends the
// server and checks the image.
type served struct {
	t      *testing.T
	srv    *Server
	img    *engine.Image
	path   string
	socket string
	stop   func()
}

func serveImage(t *testing.T, size int64, readOnly bool, prepare func(*engine.Image)) *served {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.vhd")
	img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(img)
	}
	if readOnly {
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		if img, err = engine.Open(p, engine.Options{ReadOnly: true}); err != nil {
			t.Fatal(err)
		}
	}
	srv := &Server{Exports: map[string]*Export{"disk": {Name: "disk", Description: "test image", Disk: img}}, Default: "disk"}
	sock, stop := testServer(t, srv)
	s := &served{t: t, srv: srv, img: img, path: p, socket: sock, stop: stop}
	t.Cleanup(func() { s.img.Close() })
	return s
}

func (s *served) uri() string { return "nbd+unix:///disk?socket=" + s.socket }

// closeAndCheck stops the server, closes the image and checks it.
func (s *served) closeAndCheck() {
	s.t.Helper()
	s.stop()
	if err := s.img.Close(); err != nil {
		s.t.Fatal(err)
	}
	checkClean(s.t, s.path)
}

func TestNbdinfo(t *testing.T) {
	need(t, "nbdinfo")
	const size = 64 << 20
	s := serveImage(t, size, false, func(img *engine.Image) {
		for _, w := range []struct{ off, n int64 }{{1 << 20, 4096}, {10<<20 + 512, 64 << 10}, {20 << 20, 2 << 20}} {
			if _, err := img.WriteAt(bytes.Repeat([]byte{0x5a}, int(w.n)), w.off); err != nil {
				t.Fatal(err)
			}
		}
	})
	out := run(t, "nbdinfo", "--list", "nbd+unix:///?socket="+s.socket)
	if !strings.Contains(out, `export="disk"`) {
		t.Errorf("nbdinfo --list:\n%s", out)
	}
	if out := run(t, "nbdinfo", s.uri()); !strings.Contains(out, "description: test image") {
		t.Errorf("nbdinfo:\n%s", out)
	}
	// --map shows exactly the unallocated ranges as holes.
	got := run(t, "nbdinfo", "--map", s.uri())
	want := mapLines(
		0, 1<<20, 3, "hole,zero",
		1<<20, 4096, 0, "data",
		1<<20+4096, 10<<20+512-(1<<20+4096), 3, "hole,zero",
		10<<20+512, 64<<10, 0, "data",
		10<<20+512+64<<10, 20<<20-(10<<20+512+64<<10), 3, "hole,zero",
		20<<20, 2<<20, 0, "data",
		22<<20, size-22<<20, 3, "hole,zero",
	)
	if normalize(got) != normalize(want) {
		t.Errorf("nbdinfo --map:\n%s\nwant:\n%s", got, want)
	}
	for _, can := range []string{"flush", "fua", "trim", "zero", "fast-zero", "multi-conn", "cache", "df", "structured-reply"} {
		if err := exec.Command("nbdinfo", "--can", can, s.uri()).Run(); err != nil {
			t.Errorf("nbdinfo --can %s: %v", can, err)
		}
	}
	if err := exec.Command("nbdinfo", "--is", "read-only", s.uri()).Run(); err == nil {
		t.Error("writable export reported read-only")
	}
	s.closeAndCheck()

	ro := serveImage(t, size, true, nil)
	if err := exec.Command("nbdinfo", "--is", "read-only", ro.uri()).Run(); err != nil {
		t.Errorf("nbdinfo --is read-only: %v", err)
	}
	for _, can := range []string{"trim", "zero", "fua"} {
		if err := exec.Command("nbdinfo", "--can", can, ro.uri()).Run(); err == nil {
			t.Errorf("read-only export: nbdinfo --can %s succeeded", can)
		}
	}
	for _, can := range []string{"flush", "multi-conn"} {
		if err := exec.Command("nbdinfo", "--can", can, ro.uri()).Run(); err != nil {
			t.Errorf("read-only export: nbdinfo --can %s: %v", can, err)
		}
	}
}

func mapLines(fields ...any) string {
	var b strings.Builder
	for i := 0; i < len(fields); i += 4 {
		fmt.Fprintf(&b, "%v %v %v %v\n", fields[i], fields[i+1], fields[i+2], fields[i+3])
	}
	return b.String()
}

func normalize(s string) string { return strings.Join(strings.Fields(s), " ") }

// TestCopyRoundTrip writes random data into an empty dynamic image with
// nbdcopy, reads it back with nbdcopy and qemu-img, and compares.
func TestCopyRoundTrip(t *testing.T) {
	need(t, "nbdcopy", "qemu-img")
	const size = 64 << 20
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < size; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	clear(data[16<<20 : 24<<20]) // a hole nbdcopy will zero, not write
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	s := serveImage(t, size, false, nil)
	run(t, "nbdcopy", "--flush", src, s.uri())
	back := filepath.Join(dir, "back.raw")
	run(t, "nbdcopy", s.uri(), back)
	if got, _ := os.ReadFile(back); !bytes.Equal(got, data) {
		t.Fatal("nbdcopy round trip differs")
	}
	run(t, "qemu-img", "compare", "-f", "raw", src, s.uri())
	conv := filepath.Join(dir, "conv.raw")
	run(t, "qemu-img", "convert", "-O", "raw", s.uri(), conv)
	if got, _ := os.ReadFile(conv); !bytes.Equal(got, data) {
		t.Fatal("qemu-img convert from nbd differs")
	}
	// qemu-img convert into the export, over what nbdcopy wrote.
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, s.uri())
	s.closeAndCheck()
	run(t, "qemu-img", "compare", "-f", "vpc", "-F", "raw", s.path, src)
}

func TestQemuIO(t *testing.T) {
	need(t, "qemu-io")
	s := serveImage(t, 64<<20, false, nil)
	cmds := []string{
		"write -P 0xab 1M 64k",
		"write -P 0xcd 6M 5M",
		"write -P 0x11 -f 3M 4k", // FUA
		"read -P 0xab 1M 64k",
		"read -P 0 0 1M",
		"read -P 0xcd 6M 5M",
		"read -P 0x11 3M 4k",
		"discard 6M 2M",
		"read -P 0 6M 2M",
		"read -P 0xcd 8M 3M",
		"write -z 8M 1M",
		"read -P 0 8M 1M",
		"write -z -u 9M 2M",
		"read -P 0 9M 2M",
		"write -P 0x22 100 1000", // unaligned
		"read -P 0x22 100 1000",
		"read -P 0 0 100",
		"flush",
	}
	var args []string
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	args = append(args, "-f", "raw", s.uri())
	out := run(t, "qemu-io", args...)
	if strings.Contains(out, "failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io:\n%s", out)
	}
	s.closeAndCheck()
}

// TestFioVerify writes with fio over two connections at iodepth 32 and
// verifies every block with crc32c.
func TestFioVerify(t *testing.T) {
	need(t, "fio")
	s := serveImage(t, 64<<20, false, nil)
	out := run(t, "fio", "--name=verify", "--ioengine=nbd", "--uri="+s.uri(),
		"--rw=randwrite", "--bs=4k", "--iodepth=32", "--numjobs=2",
		"--size=16M", "--offset_increment=32M", "--verify=crc32c",
		"--verify_fatal=1", "--group_reporting")
	if !strings.Contains(out, "err= 0") {
		t.Fatalf("fio:\n%s", out)
	}
	s.closeAndCheck()
}

// nbdshPrelude is prepended to nbdsh scripts: expect(fn, "EINVAL") runs
// fn and checks it fails with that error.
const nbdshPrelude = `
import nbd
def expect(what, fn, err):
    try:
        fn()
    except nbd.Error as ex:
        if ex.errno != err:
            raise SystemExit("%s: got %s, want %s" % (what, ex.errno, err))
        return
    raise SystemExit("%s: no error, want %s" % (what, err))
h.set_strict_mode(0)
size = h.get_size()
`

func TestNbdshEdgeCases(t *testing.T) {
	need(t, "nbdsh")
	s := serveImage(t, 16<<20, false, nil)
	script := nbdshPrelude + `
expect("read past end", lambda: h.pread(4096, size - 512), "EINVAL")
expect("write past end", lambda: h.pwrite(b"x" * 1024, size - 512), "ENOSPC")
expect("trim past end", lambda: h.trim(4096, size), "EINVAL")
expect("zero past end", lambda: h.zero(1024, size - 512), "ENOSPC")
expect("cache past end", lambda: h.cache(1024, size), "EINVAL")
expect("block status past end", lambda: h.block_status(4096, size, lambda *a: 0), "EINVAL")
expect("oversize read", lambda: h.pread(33 << 20, 0), "EINVAL")
expect("oversize write", lambda: h.pwrite(bytes(32 << 20 | 512), 0), "EINVAL")
expect("flag for another command", lambda: h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE), "EINVAL")
expect("unknown flag", lambda: h.flush(1 << 9), "EINVAL")
# zero length and unaligned requests work
assert h.pread(0, 0) == b""
h.pwrite(b"", 0)
h.pwrite(b"hello", 3)
assert h.pread(9, 1) == b"\0\0hello\0\0", h.pread(9, 1)
h.zero(2, 4)
assert h.pread(5, 3) == b"h\0\0lo"
h.trim(1 << 20, 1 << 20)
h.cache(4096, 0)
h.pwrite(b"y" * 4096, 8192, nbd.CMD_FLAG_FUA)
h.zero(4096, 8192, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4096, 8192) == bytes(4096)
expect("fast zero over data", lambda: h.zero(512, 3, nbd.CMD_FLAG_FAST_ZERO), "ENOTSUP")
h.zero(4 << 20, 4 << 20, nbd.CMD_FLAG_FAST_ZERO)
h.flush()
# the connection survives all of the above
assert h.pread(5, 3) == b"h\0\0lo"
`
	run(t, "nbdsh", "-u", s.uri(), "-c", script)
	s.closeAndCheck()

	ro := serveImage(t, 16<<20, true, nil)
	run(t, "nbdsh", "-u", ro.uri(), "-c", nbdshPrelude+`
expect("write to read-only", lambda: h.pwrite(b"x", 0), "EPERM")
expect("trim on read-only", lambda: h.trim(512, 0), "EPERM")
expect("zero on read-only", lambda: h.zero(512, 0), "EPERM")
h.flush()
assert h.pread(512, 0) == bytes(512)
`)
}

// TestNbdinfoMapFixed: a fixed image's unwritten (sparse) ranges are
// allocated space that reads as zeros, so they map as "zero", not holes.
func TestNbdinfoMapFixed(t *testing.T) {
	need(t, "nbdinfo")
	p := filepath.Join(t.TempDir(), "fixed.vhd")
	img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeFixed, Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{1}, 64<<10), 1<<20); err != nil {
		t.Fatal(err)
	}
	srv := &Server{Exports: map[string]*Export{"f": {Name: "f", Disk: img}}, Default: "f"}
	sock, stop := testServer(t, srv)
	got := run(t, "nbdinfo", "--map", "nbd+unix:///?socket="+sock)
	want := mapLines(0, 1<<20, 2, "zero", 1<<20, 64<<10, 0, "data", 1<<20+64<<10, 7<<20-64<<10, 2, "zero")
	if normalize(got) != normalize(want) {
		t.Errorf("nbdinfo --map of a fixed image:\n%s\nwant:\n%s", got, want)
	}
	stop()
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, p)
}
