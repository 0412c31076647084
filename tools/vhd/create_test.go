package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vhdkit/engine"
)

func TestCreateAgreesWithQemu(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		typ, size string
		want      int64
		blockSize int64
	}{
		{"dynamic", "10M", 10 << 20, 2 << 20},
		{"dynamic", "1000M", 1000 << 20, 2 << 20},
		{"dynamic", "10737419776", 10<<30 + 3*512, 2 << 20}, // not a CHS size
		{"fixed", "3584", 7 * 512, 0},
		{"fixed", "33.5M", 33<<20 + 512<<10, 0},
		{"dynamic", "127G", 127 << 30, 2 << 20},
	} {
		path := filepath.Join(dir, tc.typ+"-"+tc.size+".vhd")
		r := vhdOK(t, "create", "--type", tc.typ, "--size", tc.size, path)
		if !strings.Contains(r.stdout, "created "+path) {
			t.Errorf("create says: %s", r.stdout)
		}
		if got := qemuVirtualSize(t, path, "vpc"); got != tc.want {
			t.Errorf("%s %s: qemu-img sees %d bytes, want %d", tc.typ, tc.size, got, tc.want)
		}
		var info infoJSON
		vhdJSON(t, &info, "info", "--json", path)
		if info.Type != tc.typ || info.VirtualSize != tc.want || info.BlockSize != tc.blockSize || info.Parent != nil {
			t.Errorf("%s %s: info %+v", tc.typ, tc.size, info)
		}
		checkOK(t, path)
	}

	// A chosen block size, and --json.
	path := filepath.Join(dir, "small-blocks.vhd")
	var made map[string]any
	vhdJSON(t, &made, "create", "--size", "64M", "--block-size", "512K", "--json", path)
	if made["block_size"] != float64(512<<10) || made["virtual_size"] != float64(64<<20) || made["type"] != "dynamic" {
		t.Errorf("create --json: %v", made)
	}
	var info infoJSON
	vhdJSON(t, &info, "info", "--json", path)
	if info.BlockSize != 512<<10 || info.UUID != made["uuid"] {
		t.Errorf("info after create --block-size 512K: %+v", info)
	}
	checkOK(t, path)
}

func TestCreateRefusesExisting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.vhd")
	os.WriteFile(path, []byte("precious"), 0o644)
	r := vhdCode(t, 1, "create", "--size", "1M", path)
	if !strings.Contains(r.stderr, "exists") || !strings.Contains(r.stderr, "choose another name") {
		t.Errorf("create over an existing file:\n%s", r)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Error("create changed an existing file")
	}
	r = vhdCode(t, 1, "create", "--size", "1M", filepath.Join(t.TempDir(), "no", "such", "dir.vhd"))
	if !strings.Contains(r.stderr, "/no/such does not exist: create it first") || strings.Contains(r.stderr, "check the path") {
		t.Errorf("create in a missing folder:\n%s", r)
	}
}

func TestInfo(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.vhd")
	vhdOK(t, "create", "--type", "dynamic", "--size", "100M", path)
	// Write a little so allocated_bytes moves.
	img, err := engine.Open(path, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte("hello"), 5<<20)
	img.Close()

	var info infoJSON
	vhdJSON(t, &info, "info", "--json", path)
	st, _ := os.Stat(path)
	if info.AllocatedBytes != 2<<20 || info.FileSize != st.Size() || info.Creator.App != "win" || info.Creator.HostOS != "Wi2k" {
		t.Errorf("info: %+v", info)
	}
	if g := info.Geometry; g.Cylinders == 0 || g.Heads == 0 || g.SectorsPerTrack == 0 || g.Bytes > 100<<20 {
		t.Errorf("geometry %+v", g)
	}
	if ts, err := time.Parse(time.RFC3339, info.Timestamp); err != nil || time.Since(ts) > time.Hour {
		t.Errorf("timestamp %q: %v", info.Timestamp, err)
	}
	// The raw JSON has every documented key, parent null.
	r := vhdOK(t, "info", "--json", path)
	for _, k := range []string{`"type"`, `"virtual_size"`, `"block_size"`, `"allocated_bytes"`, `"uuid"`, `"parent": null`, `"creator"`, `"geometry"`, `"timestamp"`, `"file_size"`} {
		if !strings.Contains(r.stdout, k) {
			t.Errorf("info --json lacks %s:\n%s", k, r.stdout)
		}
	}
	r = vhdOK(t, "info", path)
	for _, s := range []string{"dynamic", "100 MiB (104857600 bytes)", "2.0 MiB (2097152 bytes)", info.UUID, `"win"`} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("info lacks %q:\n%s", s, r.stdout)
		}
	}

	// Held for writing by another process: refused, unless -U.
	w, err := engine.Open(path, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r = vhdCode(t, 1, "info", path)
	if !strings.Contains(r.stderr, "--force-share") {
		t.Errorf("info on a locked image:\n%s", r)
	}
	vhdOK(t, "info", "-U", path)
	w.Close()

	r = vhdCode(t, 1, "info", filepath.Join(dir, "missing.vhd"))
	if !strings.Contains(r.stderr, "check the path") {
		t.Errorf("info on a missing file:\n%s", r)
	}
	raw := filepath.Join(dir, "disk.raw")
	os.WriteFile(raw, make([]byte, 1<<20), 0o644)
	r = vhdCode(t, 1, "info", raw)
	if !strings.Contains(r.stderr, "cookie") || !strings.Contains(r.stderr, "not a VHD") || !strings.Contains(r.stderr, "--from raw") || strings.Contains(r.stderr, "damaged") {
		t.Errorf("info on a raw file (want: not a VHD, how to read it as raw, no talk of damage):\n%s", r)
	}
	checkOK(t, path)
}

func TestInfoDifferencingWithoutParent(t *testing.T) {
	dir := t.TempDir()
	child := filepath.Join(dir, "child.vhd")
	parentID := engine.NewUUID()
	stamp := engine.TimestampOf(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC))
	img, err := engine.Create(child, engine.CreateOptions{
		Type: engine.TypeDifferencing, Size: 40 << 20,
		Parent: &engine.ParentInfo{UUID: parentID, Timestamp: stamp, Name: "base.vhd", Locators: []engine.LocatorPath{
			{Code: engine.LocatorW2ku, Path: `C:\vms\base.vhd`},
			{Code: engine.LocatorW2ru, Path: `.\base.vhd`},
			{Code: engine.LocatorMacX, Path: "/srv/vms/base vhd.vhd"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	// The parent does not exist: info still works.
	var info infoJSON
	vhdJSON(t, &info, "info", "--json", child)
	p := info.Parent
	if info.Type != "differencing" || p == nil {
		t.Fatalf("info: %+v", info)
	}
	if p.Name != "base.vhd" || p.UUID != parentID.String() || p.Timestamp != "2024-05-06T07:08:09Z" || len(p.Locators) != 3 {
		t.Errorf("parent: %+v", p)
	}
	want := []locatorJSON{{"W2ku", `C:\vms\base.vhd`, ""}, {"W2ru", `.\base.vhd`, ""}, {"MacX", "/srv/vms/base vhd.vhd", ""}}
	for i, l := range p.Locators {
		if i < len(want) && l != want[i] {
			t.Errorf("locator %d: %+v, want %+v", i, l, want[i])
		}
	}
	r := vhdOK(t, "info", child)
	if !strings.Contains(r.stdout, `C:\vms\base.vhd`) || !strings.Contains(r.stdout, "parent uuid") {
		t.Errorf("info:\n%s", r.stdout)
	}
	// The structure is sound; the chain does not open, which check
	// warns of (as Test-VHD fails such a disk).
	r = vhdCode(t, 3, "check", "--bitmaps", child)
	if !strings.Contains(r.stdout, "warning parent-unresolved") || strings.Contains(r.stdout, ": error ") {
		t.Errorf("check of a child whose parent is missing: want only the parent-unresolved warning; got %s", r)
	}
}

// makeChild creates a differencing image whose parent does not exist.
func makeChild(t *testing.T, path string) {
	t.Helper()
	img, err := engine.Create(path, engine.CreateOptions{
		Type: engine.TypeDifferencing, Size: 8 << 20,
		Parent: &engine.ParentInfo{UUID: engine.NewUUID(), Name: "base.vhd", Locators: []engine.LocatorPath{{Code: engine.LocatorW2ru, Path: `.\base.vhd`}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCreateParentSpellings: --parent alone and qemu-img's -b make a
// differencing image; contradictions say which flag to drop; -F and
// -o cluster_size are answered. Before, --parent without --type
// differencing was refused saying "and no --size" (none was given), and
// -b was an unknown flag.
func TestCreateParentSpellings(t *testing.T) {
	dir := t.TempDir()
	parent := filepath.Join(dir, "p.vhd")
	vhdOK(t, "create", "--size", "4M", parent)
	for i, args := range [][]string{{"--parent", parent}, {"-b", parent}, {"--type", "differencing", "--parent", parent}} {
		child := filepath.Join(dir, fmt.Sprintf("c%d.vhd", i))
		vhdOK(t, append(append([]string{"create"}, args...), child)...)
		var info struct{ Type string }
		vhdJSON(t, &info, "info", "--json", child)
		if info.Type != "differencing" {
			t.Errorf("create %v: type %q, want differencing", args, info.Type)
		}
		checkOK(t, child)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "fixed", "--parent", parent}, "drop --type fixed"},
		{[]string{"--type", "differencing"}, "needs --parent PARENT"},
		{[]string{"--parent", parent, "--size", "4M"}, "drop --size"},
		{[]string{"-b", parent, "-F", "vpc"}, "the parent's format is read from it"},
		{[]string{"-o", "cluster_size=1M", "--size", "1M"}, "--block-size SIZE"},
	} {
		r := vhdCode(t, exitUsage, append(append([]string{"create"}, c.args...), filepath.Join(dir, "x.vhd"))...)
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("create %v: want %q in\n%s", c.args, c.want, r.stderr)
		}
	}
}

// TestBadBlockSizeIsUsageError: a --block-size that is no VHD block size
// is a bad command line (exit 2) on every command that takes one, and
// no file is made. Before, create exited 1 (the engine refused it).
func TestBadBlockSizeIsUsageError(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "d.vhd")
	vhdOK(t, "create", "--size", "4M", img)
	for _, args := range [][]string{
		{"create", "--block-size", "300K", filepath.Join(dir, "x.vhd"), "1M"},
		{"convert", "--to", "dynamic", "--block-size", "1G", img, filepath.Join(dir, "y.vhd")},
		{"snapshot", "--block-size", "100", img, filepath.Join(dir, "z.vhd")},
		{"measure", "--block-size", "3M", "4M"},
	} {
		r := vhdCode(t, exitUsage, args...)
		if !strings.Contains(r.stderr, `--block-size "`) || !strings.Contains(r.stderr, "want a power of two") {
			t.Errorf("vhd %s:\n%s", strings.Join(args, " "), r.stderr)
		}
	}
	for _, f := range []string{"x.vhd", "y.vhd", "z.vhd"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s was made", f)
		}
	}
	checkOK(t, img)
}
