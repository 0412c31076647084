package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"vhdkit/engine"
)

// flipByte inverts one byte of the file at off (negative: from the end).
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off < 0 {
		st, _ := f.Stat()
		off += st.Size()
	}
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// writeSome puts a recognizable pattern into an image and returns it.
func writeSome(t *testing.T, path string) []byte {
	t.Helper()
	img, err := engine.Open(path, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("vhdkit check "), 100000)
	if _, err := img.WriteAt(data, 3<<20+512); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return data
}

func readBack(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	img, err := engine.Open(path, engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, n)
	if _, err := img.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheckAndRepairFooterCopy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.vhd")
	vhdOK(t, "create", "--size", "50M", path)
	data := writeSome(t, path)
	r := vhdOK(t, "check", path)
	if !strings.Contains(r.stdout, "no problems found") {
		t.Errorf("check on a clean image:\n%s", r)
	}

	flipByte(t, path, 30) // the creator field of the footer copy at offset 0
	r = vhdCode(t, 3, "check", path)
	if !strings.Contains(r.stdout, "warning "+engine.CodeFooterCopyDamaged+" at 0x0: footer copy") || !strings.Contains(r.stdout, "vhd repair "+path) {
		t.Errorf("check on a damaged footer copy:\n%s", r)
	}
	var rep struct {
		OK       bool `json:"ok"`
		Problems []struct {
			Code           string
			Fatal, Fixable bool
			Offset         int64
			Message        string
		} `json:"problems"`
	}
	r = vhdCode(t, 3, "check", "--json", path)
	if err := jsonUnmarshal(r.stdout, &rep); err != nil || rep.OK || len(rep.Problems) != 1 || !rep.Problems[0].Fixable || rep.Problems[0].Offset != 0 ||
		rep.Problems[0].Code != engine.CodeFooterCopyDamaged || !strings.Contains(r.stdout, `"code": "footer-copy-damaged"`) {
		t.Errorf("check --json: %+v (%v)\n%s", rep, err, r.stdout)
	}

	r = vhdOK(t, "repair", path)
	if !strings.Contains(r.stdout, "rewrote the footer copy") {
		t.Errorf("repair:\n%s", r)
	}
	checkOK(t, path)
	r = vhdOK(t, "repair", path)
	if !strings.Contains(r.stdout, "nothing to repair") {
		t.Errorf("second repair:\n%s", r)
	}
	if !bytes.Equal(readBack(t, path, 3<<20+512, len(data)), data) {
		t.Error("repair changed the data")
	}
	checkOK(t, path)
}

func TestCheckAndRepairEndFooter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.vhd")
	vhdOK(t, "create", "--size", "50M", path)
	data := writeSome(t, path)
	flipByte(t, path, -512+60) // disk type of the footer at the end
	r := vhdCode(t, 3, "check", path)
	if !strings.Contains(r.stdout, "error") || !strings.Contains(r.stdout, "copy at offset 0 is intact") {
		t.Errorf("check on a damaged end footer:\n%s", r)
	}
	// info still opens it (read-only, from the copy) and says so.
	r = vhdOK(t, "info", path)
	if !strings.Contains(r.stdout, "footer at the end of the file is damaged") {
		t.Errorf("info on a damaged end footer:\n%s", r)
	}
	r = vhdOK(t, "repair", path)
	if !strings.Contains(r.stdout, "rewrote the damaged footer") {
		t.Errorf("repair:\n%s", r)
	}
	if !bytes.Equal(readBack(t, path, 3<<20+512, len(data)), data) {
		t.Error("repair changed the data")
	}
	checkOK(t, path)
}

func TestRepairRefusesUnfixable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.vhd")
	vhdOK(t, "create", "--size", "50M", path)
	flipByte(t, path, 512) // the dynamic header's cookie
	before, _ := os.ReadFile(path)
	r := vhdCode(t, 3, "check", path)
	if !strings.Contains(r.stdout, "dynamic header") {
		t.Errorf("check:\n%s", r)
	}
	r = vhdCode(t, 1, "repair", path)
	if !strings.Contains(r.stderr, "cannot repair safely") || !strings.Contains(r.stderr, "vhd convert") {
		t.Errorf("repair of an unfixable image:\n%s", r)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a refused repair changed the file")
	}
	r = vhdCode(t, 1, "info", path)
	if !strings.Contains(r.stderr, "vhd check") {
		t.Errorf("info on a damaged image does not say what to do:\n%s", r)
	}

	vhdCode(t, 1, "check", filepath.Join(dir, "missing.vhd"))
	vhdCode(t, 1, "repair", filepath.Join(dir, "missing.vhd"))

	fixed := filepath.Join(dir, "fixed.vhd")
	vhdOK(t, "create", "--type", "fixed", "--size", "5M", fixed)
	r = vhdOK(t, "repair", fixed)
	if !strings.Contains(r.stdout, "nothing to repair") {
		t.Errorf("repair of a clean fixed image:\n%s", r)
	}
	checkOK(t, fixed)
}

// TestCheckSaysChainIsBroken: vhd check of a differencing image whose
// parent moved, or was written after it, warns (exit 3) with the code
// and how to mend it; a child whose chain opens is clean. Before, both
// were "no problems found", exit 0, though neither could be opened.
func TestCheckSaysChainIsBroken(t *testing.T) {
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	vhdOK(t, "create", "--size", "4M", base)
	vhdOK(t, "snapshot", base, child)
	vhdOK(t, "check", child)

	moved := filepath.Join(dir, "moved.vhd")
	if err := os.Rename(base, moved); err != nil {
		t.Fatal(err)
	}
	r := vhdCode(t, exitProblems, "check", child)
	if !strings.Contains(r.stdout, "warning parent-unresolved: parent not found") || !strings.Contains(r.stdout, "vhd set-parent "+child+" "+moved) {
		t.Errorf("check of a child whose parent moved:\n%s", r)
	}
	var rep struct {
		Problems []struct{ Code string }
	}
	json.Unmarshal([]byte(vhdCode(t, exitProblems, "check", "--json", child).stdout), &rep)
	if len(rep.Problems) != 1 || rep.Problems[0].Code != "parent-unresolved" {
		t.Errorf("check --json: %+v", rep)
	}
	vhdOK(t, "set-parent", child, moved)
	vhdOK(t, "check", child)
}

// TestCheckNotAVHD: a file with no VHD structure left anywhere (a raw
// disk of zeros) is "not a VHD", exit 1, as check's help says; a fixed
// VHD whose footer cookie alone was damaged is still a damaged VHD,
// reported with exit 3.
func TestCheckNotAVHD(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "zeros.raw")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	r := vhdCode(t, 1, "check", raw)
	if !strings.Contains(r.stderr, raw+": ") || !strings.Contains(r.stderr, "not a VHD") || strings.Contains(r.stdout, "problem") {
		t.Errorf("raw file: want the path and 'not a VHD' on stderr, no report; got %s", r)
	}
	vhdCode(t, 1, "check", "--json", raw)

	fixed := filepath.Join(dir, "fixed.vhd")
	vhdOK(t, "create", "--type", "fixed", "--size", "1M", fixed)
	flipByte(t, fixed, -512) // the 'c' of "conectix"
	r = vhdCode(t, 3, "check", fixed)
	if !strings.Contains(r.stdout, "footer-invalid") {
		t.Errorf("fixed VHD with a damaged cookie: want footer-invalid reported; got %s", r)
	}
}

// TestRepairSaysBitmapHoles: a copy that set the file's length first and
// did not finish (its end a hole, the footer there included). check
// warns of the blocks whose bitmap is a hole; repair writes the footer
// back and still says so, in text and JSON, since check can no longer
// tell those blocks from empty ones afterwards.
func TestRepairSaysBitmapHoles(t *testing.T) {
	dir := t.TempDir()
	cutCopy := func(name string) string {
		img := filepath.Join(dir, name)
		vhdOK(t, "create", "--size", "16M", "--block-size", "1M", img)
		writeChain(t, img, bytes.Repeat([]byte{0x11}, 8<<20), 0)
		st, _ := os.Stat(img)
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 5<<20, st.Size()-5<<20)
		f.Close()
		if err != nil {
			t.Skipf("this file system cannot punch holes: %v", err)
		}
		return img
	}
	img, two := cutCopy("d.vhd"), cutCopy("two.vhd")
	if r := vhdCode(t, exitProblems, "check", img); strings.Count(r.stdout, "bitmap-hole") < 2 {
		t.Errorf("check of the unfinished copy: %s", r)
	}
	if r := vhdOK(t, "repair", img); strings.Count(r.stdout, "left as is: warning bitmap-hole") < 2 {
		t.Errorf("repair of the unfinished copy does not say what is lost: %s", r)
	}
	var rep struct{ Left []struct{ Code string } }
	vhdJSON(t, &rep, "repair", "--json", two)
	if len(rep.Left) < 2 || rep.Left[0].Code != "bitmap-hole" {
		t.Errorf("repair --json of the unfinished copy: %+v", rep)
	}
}
