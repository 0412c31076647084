package main

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// region is data to put in a test disk; zeros means explicitly written
// zeros (allocated in the file, yet to be skipped by convert).
type region struct {
	off, n int64
	zeros  bool
}

// makeRaw writes a sparse raw disk of size bytes holding random data at
// regions (holes elsewhere) and returns its contents.
func makeRaw(t *testing.T, path string, size int64, regions ...region) []byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	var seed [32]byte
	seed[0] = byte(size)
	rng := rand.NewChaCha8(seed)
	for _, r := range regions {
		b := model[r.off : r.off+r.n]
		if !r.zeros {
			rng.Read(b)
		}
		if _, err := f.WriteAt(b, r.off); err != nil {
			t.Fatal(err)
		}
	}
	return model
}

// allocated is the space a file takes on disk.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// nextData is where the first data at or after off lies (SEEK_DATA), or
// -1 if there is none.
func nextData(t *testing.T, path string, off int64) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pos, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ (%d and %d bytes)", a, b, len(x), len(y))
	}
}

func TestConvertRoundTrips(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	const size = 64<<20 + 3*512 // not a whole number of blocks
	makeRaw(t, p("src.raw"), size,
		region{off: 0, n: 64 << 10},
		region{off: 3<<20 - 4096, n: 5 << 20},
		region{off: 10 << 20, n: 4 << 20, zeros: true}, // allocated zeros
		region{off: 20<<20 + 512, n: 1536},
		region{off: size - 10000, n: 10000},
	)

	r := vhdOK(t, "convert", "--to", "dynamic", p("src.raw"), p("dyn.vhd"))
	if !strings.Contains(r.stdout, "raw image") || !strings.Contains(r.stdout, "dynamic VHD") {
		t.Errorf("convert says:\n%s", r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("convert wrote to stderr (not a terminal: no progress bar expected):\n%s", r.stderr)
	}
	checkOK(t, p("dyn.vhd"))
	qemuImg(t, "compare", "-f", "vpc", "-F", "raw", p("dyn.vhd"), p("src.raw"))
	var info infoJSON
	vhdJSON(t, &info, "info", "--json", p("dyn.vhd"))
	// Blocks 0, 1, 2, 3, 10 and 31, 32: the explicit zeros allocate nothing.
	if info.VirtualSize != size || info.AllocatedBytes != 7*2<<20 {
		t.Errorf("dynamic: virtual size %d, allocated %d; want %d, %d", info.VirtualSize, info.AllocatedBytes, size, 7*2<<20)
	}

	vhdOK(t, "convert", "--to", "fixed", p("dyn.vhd"), p("fixed.vhd"))
	checkOK(t, p("fixed.vhd"))
	qemuImg(t, "compare", "-f", "vpc", "-F", "raw", p("fixed.vhd"), p("src.raw"))
	if got := qemuVirtualSize(t, p("fixed.vhd"), "vpc"); got != size {
		t.Errorf("qemu-img sees the fixed VHD as %d bytes, want %d", got, size)
	}

	vhdOK(t, "convert", "--to", "raw", p("dyn.vhd"), p("back.raw"))
	sameFile(t, p("src.raw"), p("back.raw"))
	vhdOK(t, "convert", "--to", "raw", p("fixed.vhd"), p("back2.raw"))
	sameFile(t, p("src.raw"), p("back2.raw"))

	vhdOK(t, "convert", "--to", "dynamic", "--block-size", "512K", p("fixed.vhd"), p("small.vhd"))
	checkOK(t, p("small.vhd"))
	vhdJSON(t, &info, "info", "--json", p("small.vhd"))
	if info.BlockSize != 512<<10 {
		t.Errorf("--block-size 512K gave %d", info.BlockSize)
	}
	qemuImg(t, "compare", "-f", "vpc", "-F", "raw", p("small.vhd"), p("src.raw"))

	// --from raw takes a VHD as bytes: the footer becomes data.
	vhdOK(t, "convert", "--from", "raw", "--to", "raw", p("fixed.vhd"), p("fixed-as-raw"))
	if st, _ := os.Stat(p("fixed-as-raw")); st.Size() != size+512 {
		t.Errorf("--from raw: %d bytes, want %d", st.Size(), size+512)
	}

	// A dynamic VHD made by qemu-img reads the same.
	qemuImg(t, "convert", "-f", "raw", "-O", "vpc", p("src.raw"), p("qemu.vhd"))
	var js map[string]any
	vhdJSON(t, &js, "convert", "--to", "raw", "--json", p("qemu.vhd"), p("from-qemu.raw"))
	if js["source_type"] != "dynamic VHD" || js["format"] != "raw" {
		t.Errorf("convert --json: %v", js)
	}
	qemuImg(t, "compare", "-f", "raw", "-F", "raw", p("from-qemu.raw"), p("src.raw"))
}

func TestConvertKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	const size = 1<<30 + 8<<20
	makeRaw(t, p("src.raw"), size, region{off: 0, n: 4 << 20}, region{off: size - 4<<20, n: 4 << 20})

	vhdOK(t, "convert", "--to", "dynamic", p("src.raw"), p("dyn.vhd"))
	var info infoJSON
	vhdJSON(t, &info, "info", "--json", p("dyn.vhd"))
	// Block data is aligned in the file (engine/align.go): the file's
	// length may run past the data it holds, its space on disk may not.
	if info.AllocatedBytes != 8<<20 || info.FileSize > 13<<20 || allocated(t, p("dyn.vhd")) > 9<<20 {
		t.Errorf("dynamic output of a disk with a 1 GiB hole: allocated %d, file %d bytes, %d on disk", info.AllocatedBytes, info.FileSize, allocated(t, p("dyn.vhd")))
	}
	checkOK(t, p("dyn.vhd"))

	for _, out := range []struct{ to, name string }{{"raw", "back.raw"}, {"fixed", "fixed.vhd"}} {
		vhdOK(t, "convert", "--to", out.to, p("dyn.vhd"), p(out.name))
		if a := allocated(t, p(out.name)); a > 10<<20 {
			t.Errorf("%s output takes %d bytes on disk: the hole was written", out.to, a)
		}
		if d := nextData(t, p(out.name), 4<<20); d < size-4<<20 {
			t.Errorf("%s output has data at %#x, inside the hole", out.to, d)
		}
	}
	// qemu-img compare skips holes; reading 2 GiB of zeros is slow.
	qemuImg(t, "compare", "-f", "raw", "-F", "raw", p("src.raw"), p("back.raw"))
	qemuImg(t, "compare", "-f", "vpc", "-F", "raw", p("fixed.vhd"), p("src.raw"))
	checkOK(t, p("fixed.vhd"))
}

func TestConvertAlign(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	const size = 10<<20 + 1000
	model := makeRaw(t, p("src.raw"), size, region{off: 0, n: 1 << 20}, region{off: size - 1000, n: 1000})

	r := vhdOK(t, "convert", "--to", "fixed", "--align", "1M", p("src.raw"), p("azure.vhd"))
	if !strings.Contains(r.stdout, "rounded up") || !strings.Contains(r.stdout, "--align") || !strings.Contains(r.stdout, "11534336") {
		t.Errorf("convert --align 1M says:\n%s", r.stdout)
	}
	if got := qemuVirtualSize(t, p("azure.vhd"), "vpc"); got != 11<<20 {
		t.Errorf("aligned fixed VHD is %d bytes, want %d", got, 11<<20)
	}
	checkOK(t, p("azure.vhd"))

	vhdOK(t, "convert", "--to", "dynamic", "--align", "1M", p("src.raw"), p("aligned-dyn.vhd"))
	if got := qemuVirtualSize(t, p("aligned-dyn.vhd"), "vpc"); got != 11<<20 {
		t.Errorf("aligned dynamic VHD is %d bytes, want %d", got, 11<<20)
	}
	checkOK(t, p("aligned-dyn.vhd"))

	// Without --align a VHD still rounds up to a whole sector, and says so.
	r = vhdOK(t, "convert", "--to", "fixed", p("src.raw"), p("sector.vhd"))
	if !strings.Contains(r.stdout, "512-byte sectors") {
		t.Errorf("convert of an odd-sized raw disk says:\n%s", r.stdout)
	}
	checkOK(t, p("sector.vhd"))

	// Back to raw: the data, then zeros to the aligned size.
	vhdOK(t, "convert", "--to", "raw", p("azure.vhd"), p("back.raw"))
	got, _ := os.ReadFile(p("back.raw"))
	if len(got) != 11<<20 || !bytes.Equal(got[:size], model) || !bytes.Equal(got[size:], make([]byte, 11<<20-size)) {
		t.Error("aligned round trip changed the data")
	}
	// A raw output keeps the exact size.
	vhdOK(t, "convert", "--to", "raw", p("src.raw"), p("same.raw"))
	sameFile(t, p("src.raw"), p("same.raw"))
}

// entries lists a folder.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestConvertRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	makeRaw(t, p("src.raw"), 4<<20, region{off: 0, n: 1 << 20})
	os.WriteFile(p("dst.vhd"), []byte("precious"), 0o600)

	r := vhdCode(t, 1, "convert", "--to", "dynamic", p("src.raw"), p("dst.vhd"))
	if !strings.Contains(r.stderr, "exists") || !strings.Contains(r.stderr, "--force") {
		t.Errorf("convert onto an existing file:\n%s", r)
	}
	if b, _ := os.ReadFile(p("dst.vhd")); string(b) != "precious" {
		t.Fatal("a refused convert changed DST")
	}
	r = vhdOK(t, "convert", "--to", "dynamic", "--force", p("src.raw"), p("dst.vhd"))
	if !strings.Contains(r.stdout, "replaced") {
		t.Errorf("convert --force says:\n%s", r.stdout)
	}
	if st, _ := os.Stat(p("dst.vhd")); st.Mode().Perm() != 0o600 {
		t.Errorf("replaced file has mode %v, want the old 0600", st.Mode().Perm())
	}
	checkOK(t, p("dst.vhd"))

	r = vhdCode(t, 1, "convert", "--to", "raw", "--force", p("src.raw"), p("src.raw"))
	if !strings.Contains(r.stderr, "same file") {
		t.Errorf("convert onto itself:\n%s", r)
	}
	r = vhdCode(t, 1, "convert", "--to", "raw", "--force", p("src.raw"), dir)
	if !strings.Contains(r.stderr, "not a regular file") {
		t.Errorf("convert onto a folder:\n%s", r)
	}
	r = vhdCode(t, 1, "convert", "--to", "raw", p("missing.raw"), p("out.raw"))
	if !strings.Contains(r.stderr, "check the path") {
		t.Errorf("convert of a missing file:\n%s", r)
	}
	if names := strings.Join(entries(t, dir), " "); names != "dst.vhd src.raw" {
		t.Errorf("folder holds %s", names)
	}
}

func TestConvertDifferencingNeedsItsParent(t *testing.T) {
	dir := t.TempDir()
	child := filepath.Join(dir, "child.vhd")
	qemuImg(t, "create", "-f", "vpc", filepath.Join(dir, "base.vhd"), "8M")
	// The child records a parent UUID base.vhd does not have.
	makeChild(t, child)
	r := vhdCode(t, 1, "convert", "--to", "raw", child, filepath.Join(dir, "out.raw"))
	if !strings.Contains(r.stderr, "parent not found") || !strings.Contains(r.stderr, "set-parent") {
		t.Errorf("convert of a child whose parent is missing:\n%s", r)
	}
	if names := strings.Join(entries(t, dir), " "); names != "base.vhd child.vhd" {
		t.Errorf("folder holds %s", names)
	}
}

// mountTmpfs mounts a small tmpfs for tests of full and read-only file
// systems; the test is skipped where mounting is not allowed.
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

func TestConvertLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	makeRaw(t, src, 32<<20, region{off: 0, n: 24 << 20})

	// The destination's file system fills up mid-way.
	full := mountTmpfs(t, "size=8m")
	r := vhdCode(t, 1, "convert", "--to", "raw", src, filepath.Join(full, "out.raw"))
	if !strings.Contains(r.stderr, "free some space") {
		t.Errorf("convert onto a full file system:\n%s", r)
	}
	if names := entries(t, full); len(names) != 0 {
		t.Errorf("a failed convert left %v behind", names)
	}
	r = vhdCode(t, 1, "convert", "--to", "dynamic", src, filepath.Join(full, "out.vhd"))
	if names := entries(t, full); len(names) != 0 {
		t.Errorf("a failed convert left %v behind", names)
	}

	// The destination's folder is read-only.
	ro := mountTmpfs(t, "size=8m,ro")
	r = vhdCode(t, 1, "convert", "--to", "dynamic", src, filepath.Join(ro, "out.vhd"))
	if !strings.Contains(r.stderr, "folder "+ro+" is not writable") {
		t.Errorf("convert into a read-only folder:\n%s", r)
	}
}

func TestConvertInterrupted(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	makeRaw(t, src, 512<<20, region{off: 0, n: 512 << 20})
	dst := filepath.Join(dir, "out.vhd")
	cmd := exec.Command(vhdBin, "convert", "--to", "dynamic", src, dst)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once the temporary file exists: the copy is under way.
	tmp := ""
	for deadline := time.Now().Add(20 * time.Second); tmp == "" && time.Now().Before(deadline); {
		for _, n := range entries(t, dir) {
			if strings.HasPrefix(n, ".out.vhd.tmp-") {
				tmp = n
			}
		}
		time.Sleep(time.Millisecond)
	}
	if tmp == "" {
		cmd.Process.Kill()
		t.Fatal("convert never made its temporary file")
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	names := strings.Join(entries(t, dir), " ")
	if err == nil {
		// It finished before the signal: then it must be whole.
		checkOK(t, dst)
		t.Skip("the convert finished before it could be interrupted")
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(errb.String(), "interrupted") {
		t.Errorf("interrupted convert: %v\n%s", err, errb.String())
	}
	if names != "src.raw" {
		t.Errorf("an interrupted convert left: %s", names)
	}
}

// TestConvertBlockDevice reads a physical disk, as Virtual Server's
// linked disks did: here a read-only loop device.
func TestConvertBlockDevice(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	makeRaw(t, src, 16<<20, region{off: 1 << 20, n: 3 << 20}, region{off: 15 << 20, n: 1 << 20})
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", src).CombinedOutput()
	if err != nil {
		t.Skipf("cannot set up a loop device here (needs root and /dev/loop*): %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })

	var js map[string]any
	vhdJSON(t, &js, "convert", "--to", "dynamic", "--json", dev, filepath.Join(dir, "disk.vhd"))
	if js["source_type"] != "block device" || js["source_size"] != float64(16<<20) {
		t.Errorf("convert of a block device: %v", js)
	}
	qemuImg(t, "compare", "-f", "vpc", "-F", "raw", filepath.Join(dir, "disk.vhd"), src)
	checkOK(t, filepath.Join(dir, "disk.vhd"))

	r := vhdCode(t, 1, "convert", "--to", "raw", "--force", filepath.Join(dir, "disk.vhd"), dev)
	if !strings.Contains(r.stderr, "not a regular file") {
		t.Errorf("convert onto a device:\n%s", r)
	}
}
