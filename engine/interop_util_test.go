package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// Helpers for the tests that run the real peers (qemu-img, qemu-io,
// vhdiinfo). The peers are installed by scripts/setup.sh; a test that
// cannot find one fails and says so instead of skipping, so a CI machine
// without them cannot pass by testing nothing.

// needTool fails the test unless every named program is on PATH.
func needTool(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			t.Fatalf("%s is not installed (the interop tests need it): run scripts/setup.sh", name)
		}
	}
}

// runTool runs a peer and returns its standard output; a non-zero exit
// fails the test with everything it printed.
func runTool(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	needTool(t, name)
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %q: %v\nstdout:\n%s\nstderr:\n%s", name, args, err, out, stderr.Bytes())
	}
	return out
}

// qemuVirtualSize is the disk size qemu-img sees with the vpc driver.
func qemuVirtualSize(t testing.TB, path string) int64 {
	t.Helper()
	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Format      string `json:"format"`
	}
	out := runTool(t, "qemu-img", "info", "-f", "vpc", "--output=json", path)
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("qemu-img info %s: %v\n%s", path, err, out)
	}
	if info.Format != "vpc" {
		t.Fatalf("qemu-img info %s: format %q, want vpc", path, info.Format)
	}
	return info.VirtualSize
}

var vhdiMediaSize = regexp.MustCompile(`Media size\s*:.*\((\d+) bytes\)`)

// vhdiinfoReport runs vhdiinfo and returns its report and media size.
func vhdiinfoReport(t testing.TB, path string) (string, int64) {
	t.Helper()
	out := runTool(t, "vhdiinfo", path)
	m := vhdiMediaSize.FindSubmatch(out)
	if m == nil {
		t.Fatalf("vhdiinfo %s: no media size in its report:\n%s", path, out)
	}
	n, err := strconv.ParseInt(string(m[1]), 10, 64)
	if err != nil {
		t.Fatalf("vhdiinfo %s: media size %q: %v", path, m[1], err)
	}
	return string(out), n
}

// qemuToRaw converts a VHD to a raw file with qemu-img and returns the
// raw file's path.
func qemuToRaw(t testing.TB, vhd, dir string) string {
	t.Helper()
	raw := dir + "/qemu-out.raw"
	os.Remove(raw)
	runTool(t, "qemu-img", "convert", "-f", "vpc", "-O", "raw", vhd, raw)
	return raw
}

// readDisk reads the whole disk through the engine.
func readDisk(t testing.TB, d Disk) []byte {
	t.Helper()
	buf := make([]byte, d.Size())
	n, err := d.ReadAt(buf, 0)
	if err != nil && err != io.EOF || int64(n) != d.Size() {
		t.Fatalf("read whole disk: %d of %d bytes: %v", n, d.Size(), err)
	}
	return buf
}

// firstDiff is the offset of the first byte where a and b differ, or -1.
func firstDiff(a, b []byte) int64 {
	if bytes.Equal(a, b) {
		return -1
	}
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return int64(i)
		}
	}
	if len(a) != len(b) {
		return int64(n)
	}
	return -1
}

// copyFile copies src to a new file dst.
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// diskModel is what a disk should hold, kept as a sparse raw file so that
// models of disks of hundreds of GiB cost only what was written.
type diskModel struct {
	path string
	f    *os.File
	size int64
}

func newModel(t testing.TB, path string, size int64) *diskModel {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return &diskModel{path: path, f: f, size: size}
}

func (m *diskModel) write(t testing.TB, p []byte, off int64) {
	t.Helper()
	if _, err := m.f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

func (m *diskModel) zero(t testing.TB, off, n int64) {
	t.Helper()
	if err := unix.Fallocate(int(m.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		m.write(t, make([]byte, n), off)
	}
}

// dataRegions lists the regions of the file at path that may hold data
// (SEEK_DATA/SEEK_HOLE); the rest is holes, which read as zeros.
func dataRegions(t testing.TB, path string) [][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	var out [][2]int64
	for off := int64(0); ; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return out
		}
		if err != nil {
			t.Fatalf("seek data %s: %v", path, err)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("seek hole %s: %v", path, err)
		}
		out = append(out, [2]int64{start, end})
		off = end
	}
}

// sameFiles fails unless two (sparse) files hold the same bytes: it
// compares where either has data; where both have holes both are zeros.
func sameFiles(t testing.TB, a, b string) {
	t.Helper()
	sa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	if sa.Size() != sb.Size() {
		t.Fatalf("%s is %d bytes, %s %d", a, sa.Size(), b, sb.Size())
	}
	fa, _ := os.Open(a)
	defer fa.Close()
	fb, _ := os.Open(b)
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, r := range append(dataRegions(t, a), dataRegions(t, b)...) {
		for off := r[0]; off < r[1]; {
			n := min(r[1]-off, int64(len(ba)))
			if _, err := fa.ReadAt(ba[:n], off); err != nil {
				t.Fatal(err)
			}
			if _, err := fb.ReadAt(bb[:n], off); err != nil {
				t.Fatal(err)
			}
			if d := firstDiff(ba[:n], bb[:n]); d >= 0 {
				t.Fatalf("%s and %s differ at byte %d", a, b, off+d)
			}
			off += n
		}
	}
}

// sameAsModel fails unless the disk reads as the model: data extents are
// compared byte for byte, and holes must be holes or zeros in the model.
func sameAsModel(t testing.TB, d Disk, m *diskModel) {
	t.Helper()
	if d.Size() != m.size {
		t.Fatalf("disk is %d bytes, model %d", d.Size(), m.size)
	}
	ext, err := d.Extents(0, d.Size())
	if err != nil {
		t.Fatal(err)
	}
	compare := func(off, n int64) {
		bd, bm := make([]byte, min(n, 1<<20)), make([]byte, min(n, 1<<20))
		for end := off + n; off < end; {
			c := min(end-off, int64(len(bd)))
			if _, err := d.ReadAt(bd[:c], off); err != nil && !(err == io.EOF && off+c == d.Size()) {
				t.Fatalf("disk read at %d: %v", off, err)
			}
			if _, err := m.f.ReadAt(bm[:c], off); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if i := firstDiff(bd[:c], bm[:c]); i >= 0 {
				t.Fatalf("disk differs from the model at byte %d: %#x, want %#x", off+i, bd[i], bm[i])
			}
			off += c
		}
	}
	for _, e := range ext {
		if e.State == ExtentData {
			compare(e.Off, e.Len)
		}
	}
	// Where the model has data, the disk must hold it, whatever its
	// extents say.
	for _, r := range dataRegions(t, m.path) {
		compare(r[0], r[1]-r[0])
	}
}

// mustReadZeros fails unless the whole disk reads as zeros, read in
// chunks so big disks cost no big buffer.
func mustReadZeros(t testing.TB, d Disk) {
	t.Helper()
	buf := make([]byte, 4<<20)
	for off := int64(0); off < d.Size(); {
		n := min(d.Size()-off, int64(len(buf)))
		if _, err := d.ReadAt(buf[:n], off); err != nil && !(err == io.EOF && off+n == d.Size()) {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !isZero(buf[:n]) {
			t.Fatalf("byte %d is not zero", off+firstDiff(buf[:n], make([]byte, n)))
		}
		off += n
	}
}
