package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fuzz tests run `vhd fuzz` as a user would, against this machine's
// qemu-img and vhdimount: the tool must find their known defects by
// itself, from a fixed seed, within a bounded number of cases (well
// under a minute), minimised to a small image.

// fuzzReport is the part of a finding's report.json the tests read.
type fuzzReport struct {
	ID, Target, Kind, Detail, Signature string
	Images                              []string
	Minimised                           bool
}

// fuzzRunFinds runs `vhd fuzz run` with args and returns the findings
// whose signature contains sig.
func fuzzRunFinds(t *testing.T, sig string, args ...string) (out string, found []fuzzReport) {
	t.Helper()
	out = t.TempDir()
	start := time.Now()
	r := vhdOK(t, append([]string{"fuzz", "run", "--out", out, "--corrupt", "0", "--minimise-time", "15s", "--time", "55s"}, args...)...)
	t.Logf("%.1fs:\n%s", time.Since(start).Seconds(), r.stdout)
	dirs, _ := filepath.Glob(filepath.Join(out, "findings", "*"))
	for _, d := range dirs {
		var rep fuzzReport
		data, err := os.ReadFile(filepath.Join(d, "report.json"))
		if err != nil {
			t.Fatalf("finding without a report: %v", err)
		}
		if err := json.Unmarshal(data, &rep); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if strings.Contains(rep.Signature, sig) {
			found = append(found, rep)
		}
	}
	if len(found) == 0 {
		t.Fatalf("no finding with signature %q in %s:\n%s", sig, out, r.stdout)
	}
	return out, found
}

// checkFinding: the finding is minimised to a small image, its images
// pass vhd check (no damage: a valid case), and repro shows it again.
func checkFinding(t *testing.T, out string, rep fuzzReport) {
	t.Helper()
	dir := filepath.Join(out, "findings", rep.ID)
	var total int64
	for _, img := range rep.Images {
		st, err := os.Stat(filepath.Join(dir, img))
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
		checkNothingFatal(t, filepath.Join(dir, img))
	}
	if !rep.Minimised || total > 64<<10 {
		t.Errorf("finding %s: minimised %v, %d bytes of images; want a small image", rep.ID, rep.Minimised, total)
	}
	r := vhdOK(t, "fuzz", "repro", dir)
	if !strings.Contains(r.stdout, rep.Kind) {
		t.Errorf("vhd fuzz repro %s:\n%s", dir, r)
	}
}

// checkNothingFatal ends a test that wrote a valid image: vhd check finds
// no fatal problem (data under clear bits, which the generator puts in
// children's blocks on purpose, is a warning).
func checkNothingFatal(t *testing.T, path string) {
	t.Helper()
	var c struct {
		Problems []struct {
			Fatal   bool
			Message string
		}
	}
	r := vhd(t, "check", "--json", path)
	if err := json.Unmarshal([]byte(r.stdout), &c); err != nil || r.code != 0 && r.code != 3 {
		t.Fatalf("vhd check %s: %v\n%s", path, err, r)
	}
	for _, p := range c.Problems {
		if p.Fatal {
			t.Errorf("vhd check %s: a valid image has a fatal problem: %s", path, p.Message)
		}
	}
}

// TestFuzzFindsQemuParentZeros: QEMU 7.2's vpc driver has no parent
// support, and reads a differencing image's parent data as zeros.
func TestFuzzFindsQemuParentZeros(t *testing.T) {
	needTools(t, "qemu-img")
	out, found := fuzzRunFinds(t, "parent data where the top layer has no sector", "--target", "qemu-img", "--seed", "3", "--cases", "10")
	rep := found[0]
	if rep.Kind != "mismatch" || !strings.Contains(rep.Detail, "the target read zeros") || !strings.Contains(rep.Detail, "differencing") {
		t.Errorf("finding %s: %s: %s", rep.ID, rep.Kind, rep.Detail)
	}
	checkFinding(t, out, rep)
}

// TestFuzzFindsLibvhdiPartialBlock: libvhdi (vhdimount) misreads a
// partly written block of a differencing image.
func TestFuzzFindsLibvhdiPartialBlock(t *testing.T) {
	needFUSE(t)
	needTools(t, "vhdimount", "fusermount3")
	out, found := fuzzRunFinds(t, "partly written block", "--target", "vhdimount", "--seed", "3", "--cases", "10")
	for _, rep := range found { // (a dynamic image's partly written block is misread too)
		if rep.Kind == "mismatch" && strings.Contains(rep.Detail, "differencing") {
			checkFinding(t, out, rep)
			return
		}
	}
	t.Errorf("no finding of a differencing image's partly written block: %+v", found)
}

// TestFuzzOwnReader: vhd itself, on valid and damaged cases, has no
// finding; a second run in the same folder goes on with new cases.
func TestFuzzOwnReader(t *testing.T) {
	out := t.TempDir()
	for range 2 {
		r := vhdOK(t, "fuzz", "run", "--target", "vhd", "--seed", "11", "--cases", "25", "--out", out)
		if !strings.Contains(r.stdout, "25 cases") || !strings.Contains(r.stdout, "0 new findings") {
			t.Fatalf("vhd fuzz run --target vhd:\n%s", r)
		}
	}
	var cursor map[string]int
	data, _ := os.ReadFile(filepath.Join(out, "corpus", "cursor.json"))
	if err := json.Unmarshal(data, &cursor); err != nil || cursor["11"] != 50 {
		t.Errorf("cursor after two runs of 25 cases: %s (%v)", data, err)
	}
}

// TestFuzzGenerate: the manifest lists every case with its files and
// expectation, and a valid fixed image's expected digest is that of its
// data (checked here from the bytes, not through vhdgen).
func TestFuzzGenerate(t *testing.T) {
	dir := t.TempDir()
	vhdOK(t, "fuzz", "generate", "--seed", "2", "--count", "40", dir)
	var entries []struct {
		ID       string
		Files    []string
		Kind     string
		Expected struct {
			Type    string
			Size    int64
			Digest  string `json:"sha256"`
			Refused bool
		}
		Mutation *struct{ Name string }
	}
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &entries); err != nil || len(entries) != 40 {
		t.Fatalf("manifest: %d entries, %v", len(entries), err)
	}
	kinds, fixed := map[string]int{}, 0
	for _, e := range entries {
		kinds[e.Kind]++
		for _, f := range e.Files {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("case %s: %v", e.ID, err)
			}
		}
		if (e.Kind == "corrupt") != e.Expected.Refused || e.Kind == "corrupt" && e.Mutation == nil {
			t.Errorf("case %s: kind %s, expected %+v, mutation %v", e.ID, e.Kind, e.Expected, e.Mutation)
		}
		if e.Kind == "valid" && e.Mutation == nil {
			for _, f := range e.Files {
				checkNothingFatal(t, filepath.Join(dir, f))
			}
		}
		if e.Kind != "valid" || e.Expected.Type != "fixed" || e.Mutation != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Files[0]))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b[:e.Expected.Size])
		if hex.EncodeToString(sum[:]) != e.Expected.Digest {
			t.Errorf("case %s: expected digest %s, the data's is %x", e.ID, e.Expected.Digest, sum)
		}
		fixed++
		checkOK(t, filepath.Join(dir, e.Files[0]))
	}
	if kinds["valid"] == 0 || kinds["corrupt"] == 0 || fixed == 0 {
		t.Errorf("kinds %v, %d plain fixed images checked", kinds, fixed)
	}
}
