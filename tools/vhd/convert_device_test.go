package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// loopDevice attaches file to a free loop device for the test.
func loopDevice(t *testing.T, file string) string {
	t.Helper()
	needRoot(t)
	out, err := exec.Command("losetup", "-f", "--show", file).CombinedOutput()
	if err != nil {
		t.Skipf("this machine cannot attach a loop device: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// TestConvertOntoDevice: a dynamic VHD restored onto a loop device that
// held other bytes reads back exactly as the image (data written, holes
// zeroed), the device past the image's size is untouched; a device in
// use, a smaller device and a regular file are refused with nothing
// written.
func TestConvertOntoDevice(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "d.vhd")
	vhdOK(t, "create", "--size", "16M", img)
	data := writeSome(t, img)
	want := filepath.Join(dir, "want.raw")
	vhdOK(t, "convert", "--to", "raw", img, want)

	backing := filepath.Join(dir, "dev.img")
	old := bytes.Repeat([]byte{0xEE}, 20<<20)
	if err := os.WriteFile(backing, old, 0o644); err != nil {
		t.Fatal(err)
	}
	dev := loopDevice(t, backing)

	// In use: another exclusive opener (as a mount is) holds it.
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := vhdCode(t, exitFailed, "convert", "--to", "raw", "--onto-device", img, dev)
	unix.Close(fd)
	if !strings.Contains(r.stderr, "in use") {
		t.Errorf("restore onto a device in use:\n%s", r)
	}
	// Without --onto-device a device is never written.
	vhdCode(t, exitFailed, "convert", "--to", "raw", "--force", img, dev)
	vhdCode(t, exitUsage, "convert", "--to", "dynamic", "--onto-device", img, dev)
	if b, _ := os.ReadFile(backing); !bytes.Equal(b, old) {
		t.Fatal("a refused restore wrote the device")
	}

	r = vhdOK(t, "convert", "--to", "raw", "--onto-device", img, dev)
	if !strings.Contains(r.stdout, "restored "+img) {
		t.Errorf("restore output:\n%s", r)
	}
	got, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes, _ := os.ReadFile(want)
	if !bytes.Equal(got[:16<<20], wantBytes) {
		t.Fatal("the device does not read as the image after the restore")
	}
	if !bytes.Equal(got[16<<20:], old[16<<20:]) {
		t.Fatal("the restore wrote past the image's size")
	}
	if !bytes.Contains(got, data) {
		t.Fatal("the image's data is not on the device")
	}

	// --salvage onto a device: a copy cut in its last block restores,
	// and --json says what was lost (found by review: it did not).
	cut := filepath.Join(dir, "cut.vhd")
	b, _ := os.ReadFile(img)
	os.WriteFile(cut, b[:len(b)-512-1<<20], 0o644)
	var res struct {
		LostBytes int64 `json:"lost_bytes"`
		Lost      []any
	}
	vhdJSONCode(t, exitProblems, &res, "convert", "--to", "raw", "--onto-device", "--salvage", "--json", cut, dev)
	if res.LostBytes <= 0 || len(res.Lost) == 0 {
		t.Errorf("--onto-device --salvage --json of a cut image: %+v, want what was lost", res)
	}
	if r := vhdCode(t, exitProblems, "convert", "--to", "raw", "--onto-device", "--salvage", cut, dev); !strings.Contains(r.stdout, "could not be read") {
		t.Errorf("--onto-device --salvage of a cut image does not say what was lost:\n%s", r)
	}

	// A smaller device: refused, nothing written.
	small := filepath.Join(dir, "small.img")
	os.WriteFile(small, bytes.Repeat([]byte{0xEE}, 8<<20), 0o644)
	sdev := loopDevice(t, small)
	if r := vhdCode(t, exitFailed, "convert", "--to", "raw", "--onto-device", img, sdev); !strings.Contains(r.stderr, "nothing was written") {
		t.Errorf("restore onto a smaller device:\n%s", r)
	}
	// A regular file is not a device.
	if r := vhdCode(t, exitFailed, "convert", "--to", "raw", "--onto-device", img, small); !strings.Contains(r.stderr, "not a block device") {
		t.Errorf("--onto-device onto a file:\n%s", r)
	}
	checkOK(t, img)
}
