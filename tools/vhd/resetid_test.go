package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"vhdkit/chains"
	"vhdkit/engine"
)

type idInfo struct {
	UUID      string `json:"uuid"`
	Timestamp string `json:"timestamp"`
	Parent    *struct {
		UUID string `json:"uuid"`
	} `json:"parent"`
}

func infoOf(t *testing.T, img string) idInfo {
	t.Helper()
	var i idInfo
	vhdJSON(t, &i, "info", "--json", img)
	return i
}

var resetLine = regexp.MustCompile(`^(\S+): new UUID (\S+) \(was (\S+)\)\n`)

// resetID runs vhd reset-id and returns the old and new UUID it printed.
func resetID(t *testing.T, args ...string) (old, nu string, r result) {
	t.Helper()
	r = vhdOK(t, append([]string{"reset-id"}, args...)...)
	m := resetLine.FindStringSubmatch(r.stdout)
	if m == nil || m[2] == m[3] {
		t.Fatalf("vhd reset-id %v printed:\n%s", args, r)
	}
	return m[3], m[2], r
}

// TestResetIDEveryType: fixed, dynamic and differencing images get a new
// UUID, printed and shown by vhd info, and keep their timestamp, parent
// link and data; --uuid gives the one asked for.
func TestResetIDEveryType(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	vhdOK(t, "create", "--type", "fixed", "--size", "8M", p("fixed.vhd"))
	vhdOK(t, "create", "--size", "8M", p("dyn.vhd"))
	vhdOK(t, "create", "--size", "8M", p("base.vhd"))
	model := make([]byte, 8<<20)
	writeThroughChain(t, p("base.vhd"), model, 1)
	vhdOK(t, "create", "--type", "differencing", "--parent", p("base.vhd"), p("child.vhd"))
	for i, n := range []string{"fixed.vhd", "dyn.vhd", "child.vhd"} {
		writeThroughChain(t, p(n), append([]byte(nil), model...), uint64(i+2))
	}
	for _, n := range []string{"fixed.vhd", "dyn.vhd", "child.vhd"} {
		img := p(n)
		before, data := infoOf(t, img), rawOf(t, img, p("before.raw"))
		old, nu, _ := resetID(t, img)
		after := infoOf(t, img)
		if old != before.UUID || nu != after.UUID || after.Timestamp != before.Timestamp {
			t.Errorf("%s: printed %s -> %s; info before %+v, after %+v", n, old, nu, before, after)
		}
		if (before.Parent == nil) != (after.Parent == nil) || (after.Parent != nil && after.Parent.UUID != before.Parent.UUID) {
			t.Errorf("%s: parent link changed: %+v -> %+v", n, before.Parent, after.Parent)
		}
		if !bytes.Equal(rawOf(t, img, p("after.raw")), data) {
			t.Errorf("%s: data changed", n)
		}
		const want = "0123abcd-4567-89ef-0123-456789abcdef"
		vhdOK(t, "reset-id", "--uuid", "{"+strings.ToUpper(want)+"}", img)
		if got := infoOf(t, img).UUID; got != want {
			t.Errorf("%s: --uuid %s gave %s", n, want, got)
		}
		if r := vhdOK(t, "reset-id", "--uuid", want, img); !strings.Contains(r.stdout, "nothing changed") {
			t.Errorf("%s: the UUID it has: %s", n, r)
		}
		checkOK(t, img)
	}
	checkOK(t, p("base.vhd"))
}

// TestResetIDChildren: an image with children is refused, naming them;
// --force changes it and says how to re-link each; re-linked with
// set-parent --ignore-uuid they open again and read as before. A copy
// beside the original is not held back by the original's children.
func TestResetIDChildren(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	vhdOK(t, "create", "--size", "8M", p("base.vhd"))
	writeThroughChain(t, p("base.vhd"), make([]byte, 8<<20), 1)
	kids := []string{p("a.vhd"), p("b.vhd")}
	var views [][]byte
	for i, k := range kids {
		vhdOK(t, "create", "--type", "differencing", "--parent", p("base.vhd"), k)
		writeThroughChain(t, k, make([]byte, 8<<20), uint64(i+5))
		views = append(views, rawOf(t, k, p("view.raw")))
	}
	copyFile(t, p("base.vhd"), p("copy.vhd"))
	resetID(t, p("copy.vhd")) // the children lead to base.vhd, which keeps its UUID
	for i, k := range kids {
		if !bytes.Equal(rawOf(t, k, p("view.raw")), views[i]) {
			t.Fatalf("%s reads differently after its parent's copy got a new UUID", k)
		}
	}

	id := infoOf(t, p("base.vhd")).UUID
	r := vhdCode(t, exitFailed, "reset-id", p("base.vhd"))
	saysAll(t, "reset-id of a parent", r, kids[0], kids[1], "stop opening", "--force", "set-parent --ignore-uuid")
	if strings.Count(r.stderr, "\n") != 1 || infoOf(t, p("base.vhd")).UUID != id {
		t.Fatalf("refusal is not one line, or changed the UUID:\n%s", r)
	}
	_, nu, r := resetID(t, "--force", p("base.vhd"))
	for _, k := range kids {
		saysAll(t, "reset-id --force", r, "'vhd set-parent --ignore-uuid "+k+" "+p("base.vhd")+"'")
		vhdCode(t, exitFailed, "convert", "--to", "raw", k, p("view.raw"))
	}
	for i, k := range kids {
		vhdOK(t, "set-parent", "--ignore-uuid", k, p("base.vhd"))
		if !bytes.Equal(rawOf(t, k, p("view.raw")), views[i]) {
			t.Errorf("%s re-linked to %s reads differently", k, nu)
		}
		checkOK(t, k)
	}
	checkOK(t, p("base.vhd"))
	checkOK(t, p("copy.vhd"))
}

// TestResetIDChildrenElsewhere: children in another folder count when
// that folder is a parent folder (--parent-dir, VHD_PARENT_PATH).
func TestResetIDChildrenElsewhere(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	base, kid := filepath.Join(a, "base.vhd"), filepath.Join(b, "kid.vhd")
	vhdOK(t, "create", "--size", "4M", base)
	vhdOK(t, "create", "--type", "differencing", "--parent", base, kid)
	r := vhdCode(t, exitFailed, "reset-id", "--parent-dir", b, base)
	saysAll(t, "reset-id --parent-dir", r, kid, "--force")
	cmd := exec.Command(vhdBin, "reset-id", base)
	cmd.Env = append(os.Environ(), "VHD_PARENT_PATH="+b)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), kid) {
		t.Errorf("reset-id with VHD_PARENT_PATH=%s: %v\n%s", b, err, out)
	}
	checkOK(t, base)
	checkOK(t, kid)
}

// TestResetIDRefusals: an image in use, a read-only file, an undo disk,
// an image with one, and a bad --uuid are refused in one line saying what
// to do, and the file is unchanged.
func TestResetIDRefusals(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	img := p("disk.vhd")
	vhdOK(t, "create", "--size", "4M", img)
	refused := func(what string, code int, path string, words ...string) {
		t.Helper()
		before := fileBytes(t, path)
		r := vhdCode(t, code, append([]string{"reset-id"}, append(argsOf(what), path)...)...)
		saysAll(t, "reset-id "+what, r, words...)
		// (The lock's refusal, shared by every command, names the holder
		// on a second line.)
		if what != "in use" && strings.Count(strings.SplitN(r.stderr, "\nUsage:", 2)[0], "\n") > 1 {
			t.Errorf("reset-id %s: more than one line:\n%s", what, r)
		}
		if !bytes.Equal(fileBytes(t, path), before) {
			t.Errorf("reset-id %s changed %s", what, path)
		}
	}
	refused("--uuid=nope", exitUsage, img, "not a UUID")
	refused("--uuid=00000000-0000-0000-0000-000000000000", exitUsage, img, "nil UUID")

	sock := p("s.sock")
	srv, _ := startServe(t, nil, "--socket", sock, img)
	refused("in use", exitFailed, img, "'vhd serve' (pid "+strconv.Itoa(srv.Process.Pid))
	stopServe(t, srv)

	if err := os.Chmod(img, 0o444); err != nil {
		t.Fatal(err)
	}
	refused("read-only", exitFailed, img, "read-only", "chmod u+w")
	if err := os.Chmod(img, 0o644); err != nil {
		t.Fatal(err)
	}

	c, _, err := chains.OpenUndo(img, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt([]byte("pending"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	vud := chains.UndoPath(img)
	refused("with an undo disk", exitFailed, img, "vhd undo commit "+img, "vhd undo discard "+img)
	refused("of an undo disk", exitFailed, vud, "undo disk", "vhd undo commit "+img)
	checkOK(t, img)
	checkOK(t, vud)
}

// argsOf is the flag a refusal case passes ("" for none).
func argsOf(what string) []string {
	if strings.HasPrefix(what, "--") {
		return []string{what}
	}
	return nil
}

func fileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestResetIDPeers: after reset-id, qemu-img and libvhdi's vhdiinfo read
// the image with its new UUID and the same data, and a dynamic image's
// two footer copies both hold it. (qemu-img check has no check for VHD:
// "This image format does not support checks".)
func TestResetIDPeers(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	for _, typ := range []string{"dynamic", "fixed", "qemu"} {
		img := p(typ + ".vhd")
		makePeerImage(t, typ, img)
		data := rawOf(t, img, p("vhd.raw"))
		_, nu, _ := resetID(t, img)
		if out := qemuImg(t, "info", "-f", "vpc", img); !strings.Contains(out, "virtual size: 8 MiB") {
			t.Errorf("qemu-img info of %s:\n%s", typ, out)
		}
		qemuImg(t, "convert", "-f", "vpc", "-O", "raw", img, p("qemu.raw"))
		if !bytes.Equal(fileBytes(t, p("qemu.raw")), data) {
			t.Errorf("%s: qemu-img reads other data after reset-id", typ)
		}
		out, err := exec.Command("vhdiinfo", img).CombinedOutput()
		if err != nil || !regexp.MustCompile(`Identifier\s*:\s*`+nu).Match(out) {
			t.Errorf("vhdiinfo %s (want identifier %s): %v\n%s", typ, nu, err, out)
		}
		b := fileBytes(t, img)
		copies := [][]byte{b[len(b)-engine.FooterSize:]}
		if typ != "fixed" {
			copies = append(copies, b[:engine.FooterSize])
		}
		for i, raw := range copies {
			ft, err := engine.ParseFooter(raw, 0)
			if err != nil || ft.UUID.String() != nu {
				t.Errorf("%s footer copy %d: %v, UUID %s, want %s", typ, i, err, ft.UUID, nu)
			}
		}
		checkOK(t, img)
	}
}

// makePeerImage makes an 8 MiB image with data: vhd's fixed or dynamic,
// or qemu-img's dynamic one, whose blocks follow its BAT with no room
// for a new header before them (the relocation goes past the end and
// comes back).
func makePeerImage(t *testing.T, typ, img string) {
	t.Helper()
	if typ != "qemu" {
		vhdOK(t, "create", "--type", typ, "--size", "8M", img)
		writeThroughChain(t, img, make([]byte, 8<<20), 3)
		return
	}
	qemuImg(t, "create", "-f", "vpc", "-o", "force_size=on", img, "8M")
	out, err := exec.Command("qemu-io", "-f", "vpc", "-c", "write -P 0xab 0 3M", "-c", "write -P 0xcd 5M 1M", img).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
}
