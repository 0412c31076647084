package main

import (
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"vhdkit/engine"
)

// foreignFile is a file in another format, made by the real tool, with
// what `vhd info` must call it and the advice it must give.
type foreignFile struct {
	name   string // file name in the test folder
	what   string // in every message: "a qcow2 image, not a VHD"
	advice string // "qemu-img convert" or the unpack command
	make   func(t *testing.T, path string)
}

// runPeer runs a program and fails the test if it fails.
func runPeer(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

func qemuCreate(format string, opts ...string) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		args := append([]string{"create", "-q", "-f", format}, opts...)
		qemuImg(t, append(args, path, "16M")...)
	}
}

// packed makes a 1 MiB raw disk and packs it with the tool into path.
// The raw disk is named path without its extension (what unpacking
// gives back) and removed. In args, IN is the raw disk's name and OUT
// the packed file's; without IN the raw disk's name goes last.
func packed(tool string, args ...string) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		raw := strings.TrimSuffix(path, filepath.Ext(path))
		makeRaw(t, raw, 1<<20, region{off: 4096, n: 64 << 10})
		var argv []string
		for _, a := range args {
			argv = append(argv, strings.NewReplacer("IN", filepath.Base(raw), "OUT", filepath.Base(path)).Replace(a))
		}
		if !slices.Contains(args, "IN") {
			argv = append(argv, filepath.Base(raw))
		}
		cmd := exec.Command(tool, argv...)
		cmd.Dir = filepath.Dir(path)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", tool, err, out)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s made no %s: %v", tool, path, err)
		}
		os.Remove(raw)
	}
}

func foreignFiles() []foreignFile {
	const qemu = "qemu-img convert -O vpc -o subformat=dynamic,force_size=on"
	return []foreignFile{
		{"disk.qcow2", "a qcow2 image, not a", qemu, qemuCreate("qcow2")},
		{"disk.qcow", "a qcow (version 1) image, not a", qemu, qemuCreate("qcow")},
		{"disk.vhdx", "a VHDX image, not a", qemu, qemuCreate("vhdx")},
		{"disk.vmdk", "a VMDK image, not a", qemu, qemuCreate("vmdk")},
		{"stream.vmdk", "a VMDK image, not a", qemu, qemuCreate("vmdk", "-o", "subformat=streamOptimized")},
		{"flat.vmdk", "a VMDK descriptor", qemu, qemuCreate("vmdk", "-o", "subformat=monolithicFlat")},
		{"disk.vdi", "a VDI image, not a", qemu, qemuCreate("vdi")},
		{"disk.qed", "a QED image, not a", qemu, qemuCreate("qed")},
		{"disk.parallels", "a Parallels image, not a", qemu, qemuCreate("parallels")},
		{"g.raw.gz", "a gzip-compressed file, not a", "gzip -dk", packed("gzip", "-k")},
		{"x.raw.xz", "an xz-compressed file, not a", "xz -dk", packed("xz", "-k")},
		{"z.raw.zst", "a zstd-compressed file, not a", "zstd -d", packed("zstd", "-q", "-k")},
		{"b.raw.bz2", "a bzip2-compressed file, not a", "bzip2 -dk", packed("bzip2", "-k")},
		{"p.zip", "a zip archive, not a", "unzip", packed("zip", "-q", "OUT", "IN")},
		{"appliance.ova", "a tar archive", "tar -xf", packed("tar", "-cf", "OUT", "IN")},
	}
}

func sumFile(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestOtherFormatsAreNotVHDs: info names the format and says how to
// convert it; check and repair say it is not a VHD (exit 1, not 3) and
// offer no repair; nothing writes the file; convert refuses it unless
// told --from raw, and then copies its bytes.
func TestOtherFormatsAreNotVHDs(t *testing.T) {
	dir := t.TempDir()
	for _, ff := range foreignFiles() {
		t.Run(ff.name, func(t *testing.T) {
			path := filepath.Join(dir, ff.name)
			ff.make(t, path)
			before := sumFile(t, path)
			for _, args := range [][]string{{"info"}, {"info", "--json"}, {"check"}, {"check", "--json", "--bitmaps"}, {"repair"}, {"repair", "--bitmaps"}} {
				r := vhdCode(t, 1, append(args, path)...)
				if !strings.Contains(r.stderr, ff.what) || !strings.Contains(r.stderr, ff.advice) {
					t.Errorf("vhd %v: does not say %q and %q:\n%s", args, ff.what, ff.advice, r)
				}
				if strings.Contains(r.stdout+r.stderr, "repair") && args[0] != "repair" || strings.Contains(r.stderr, "damage") {
					t.Errorf("vhd %v: talks of damage or repair:\n%s", args, r)
				}
			}
			if sumFile(t, path) != before {
				t.Fatal("info, check or repair changed the file")
			}
			listing := entries(t, dir)
			out := filepath.Join(dir, "out-"+ff.name+".vhd")
			r := vhdCode(t, 1, "convert", "--to", "dynamic", path, out)
			if !strings.Contains(r.stderr, ff.what) || !strings.Contains(r.stderr, "--from raw") {
				t.Errorf("convert of %s: does not refuse naming --from raw:\n%s", ff.name, r)
			}
			if got := entries(t, dir); !slices.Equal(got, listing) {
				t.Errorf("a refused convert left files: %v", got)
			}
			// Told it is raw, convert copies its bytes as they are.
			vhdOK(t, "convert", "--from", "raw", "--to", "dynamic", path, out)
			qemuImg(t, "compare", "-q", "-f", "vpc", "-F", "raw", out, path)
			checkOK(t, out)
			os.Remove(out)
			if sumFile(t, path) != before {
				t.Fatal("convert changed its source")
			}
		})
	}
}

// TestOtherFormatsAdviceWorks follows the advice info gives, to the
// letter, for a qcow2 image and a gzip file.
func TestOtherFormatsAdviceWorks(t *testing.T) {
	dir := t.TempDir()
	qcow2 := filepath.Join(dir, "disk.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", qcow2, "16M")
	qemuIO := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 64k", "-c", "write -P 0xcd 15M 4k", qcow2)
	if out, err := qemuIO.CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	r := vhdCode(t, 1, "info", qcow2)
	m := regexp.MustCompile(`qemu-img (convert .*) NEW\.vhd`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no qemu-img advice:\n%s", r)
	}
	newVHD := filepath.Join(dir, "new.vhd")
	qemuImg(t, append(strings.Fields(m[1]), newVHD)...)
	vhdOK(t, "info", newVHD)
	qemuImg(t, "compare", "-q", "-f", "vpc", "-F", "qcow2", newVHD, qcow2)
	checkOK(t, newVHD)

	gz := filepath.Join(dir, "g.raw.gz")
	packed("gzip", "-k")(t, gz)
	r = vhdCode(t, 1, "info", gz)
	m = regexp.MustCompile(`unpack it first \((gzip -dk \S+)\)`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no gzip advice:\n%s", r)
	}
	f := strings.Fields(m[1])
	runPeer(t, f[0], f[1:]...)
	vhdOK(t, "convert", "--to", "dynamic", filepath.Join(dir, "g.raw"), filepath.Join(dir, "g.vhd"))
	checkOK(t, filepath.Join(dir, "g.vhd"))
}

// TestRawDisksStillConvert: only a positive signature of another format
// refuses. A raw disk whose first sector is zeros, or an MBR or GPT
// disk, converts without --from raw; info names the partitioned ones as
// raw disks and points at convert, not at repair.
func TestRawDisksStillConvert(t *testing.T) {
	dir := t.TempDir()
	zeros := filepath.Join(dir, "zeros.raw")
	makeRaw(t, zeros, 8<<20, region{off: 1 << 20, n: 1 << 20})
	mbr := filepath.Join(dir, "mbr.raw")
	makeRaw(t, mbr, 8<<20, region{off: 2 << 20, n: 1 << 20})
	sfdisk(t, mbr, "label: dos\ntype=83\n")
	gpt := filepath.Join(dir, "gpt.raw")
	makeRaw(t, gpt, 8<<20, region{off: 2 << 20, n: 1 << 20})
	sfdisk(t, gpt, "label: gpt\ntype=linux\n")
	for _, c := range []struct{ path, what string }{{zeros, ""}, {mbr, "a raw disk image (MBR boot sector), not a VHD"}, {gpt, "a raw disk image (GPT partition table), not a VHD"}} {
		out := c.path + ".vhd"
		vhdOK(t, "convert", "--to", "dynamic", c.path, out)
		qemuImg(t, "compare", "-q", "-f", "vpc", "-F", "raw", out, c.path)
		checkOK(t, out)
		if c.what == "" {
			continue
		}
		for _, cmd := range []string{"info", "check", "repair"} {
			r := vhdCode(t, 1, cmd, c.path)
			if !strings.Contains(r.stderr, c.what) || !strings.Contains(r.stderr, "vhd convert --to dynamic "+c.path) || strings.Contains(r.stderr, "damage") {
				t.Errorf("vhd %s on %s:\n%s", cmd, c.path, r)
			}
		}
	}
}

func sfdisk(t *testing.T, path, script string) {
	t.Helper()
	cmd := exec.Command("sfdisk", "-q", path)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
}

// TestVHDHoldingAnotherFormat: a fixed VHD whose disk begins with a
// qcow2 image (the bytes a guest wrote) is a VHD: its footer wins.
func TestVHDHoldingAnotherFormat(t *testing.T) {
	dir := t.TempDir()
	qcow2 := filepath.Join(dir, "inner.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", qcow2, "16M")
	inner, err := os.ReadFile(qcow2)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"fixed", "dynamic"} {
		path := filepath.Join(dir, typ+".vhd")
		vhdOK(t, "create", "--type", typ, "--size", "16M", path)
		img, err := engine.Open(path, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := img.WriteAt(inner, 0); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		if r := vhdOK(t, "info", path); !strings.Contains(r.stdout, typ) {
			t.Errorf("info of a %s VHD holding a qcow2:\n%s", typ, r)
		}
		checkOK(t, path)
		raw := filepath.Join(dir, typ+".raw")
		vhdOK(t, "convert", "--to", "raw", path, raw)
		got, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		if string(got[:len(inner)]) != string(inner) {
			t.Errorf("convert of a %s VHD holding a qcow2 lost the qcow2", typ)
		}
	}
}
