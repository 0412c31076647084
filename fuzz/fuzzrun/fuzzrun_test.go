package fuzzrun

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vhdkit/engine"
	"vhdkit/fuzz/vhdgen"
)

// parentBlind is a target, in process, with the defect QEMU's vpc driver
// has: it reads a differencing image's parent data as zeros.
type parentBlind struct{}

func (parentBlind) Name() string    { return "parent-blind" }
func (parentBlind) Version() string { return "test" }
func (parentBlind) Read(ctx context.Context, top, work string) Observation {
	f, err := vhdgen.ReadFile(top)
	if err != nil {
		return Observation{Refused: true, Why: err.Error(), Size: -1}
	}
	lookup := func(name string) (*vhdgen.File, bool) {
		p, err := vhdgen.ReadFile(filepath.Join(filepath.Dir(top), name))
		return p, err == nil
	}
	v, err := vhdgen.Decode(f, lookup)
	if err != nil {
		return Observation{Refused: true, Why: err.Error(), Size: -1}
	}
	for s, from := range v.From {
		if from.Layer > 0 {
			clear(v.Raw[s*vhdgen.SectorSize : (s+1)*vhdgen.SectorSize])
		}
	}
	return Observation{Size: v.Size, Type: v.Type, Raw: v.Raw}
}

// TestRunFindsAndMinimises: a run finds the parent-blind defect, writes
// one finding for it (however many cases show it), minimised to a small
// chain, and repro shows it again; a second run in the folder knows it.
func TestRunFindsAndMinimises(t *testing.T) {
	out := t.TempDir()
	cfg := Config{Target: parentBlind{}, Out: out, Seed: 3, MaxCases: 40, Options: vhdgen.Options{}, MinimiseTime: 20 * time.Second}
	sum, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Cases != 40 || len(sum.New) == 0 || sum.Repeated == 0 {
		t.Fatalf("%d cases, %d new findings, %d repeated; want 40, some and some", sum.Cases, len(sum.New), sum.Repeated)
	}
	var rep *Report
	for _, r := range sum.New {
		// The one defect shows as parent data read wrong, under a clear
		// bit or where the top has no block: nothing else.
		if r.Kind != KindMismatch || !strings.HasPrefix(r.Signature, "mismatch|bytes|parent data ") || !r.Minimised {
			t.Errorf("finding %+v", r)
		}
		if r.Signature == "mismatch|bytes|parent data where the top layer has no sector" {
			rep = r
		}
	}
	if rep == nil {
		t.Fatalf("no finding of parent data where the top layer has no sector")
	}
	var total int64
	for _, img := range rep.Images {
		st, err := os.Stat(filepath.Join(out, "findings", rep.ID, img))
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
		checkValid(t, filepath.Join(out, "findings", rep.ID, img))
	}
	if total > 64<<10 || rep.Case.Layers[0].Size > 4096 {
		t.Errorf("minimised to %d bytes of images, a disk of %d", total, rep.Case.Layers[0].Size)
	}
	if _, f, err := Repro(context.Background(), filepath.Join(out, "findings", rep.ID), parentBlind{}); err != nil || f.showing(rep.Signature) == nil {
		t.Errorf("repro: %v, %v", f, err)
	}
	cfg.MaxCases = 10
	sum, err = Run(context.Background(), cfg)
	if err != nil || sum.Known == 0 || len(sum.New) != 0 || sum.First != 40 {
		t.Errorf("second run: %+v, %v; want it to know the finding and start at case 40", sum, err)
	}
}

// TestCommandTarget: a command's signal is a crash, its running past the
// timeout a hang, its refusal of a valid image refused-valid and its
// acceptance of a corrupt one accepted-invalid.
func TestCommandTarget(t *testing.T) {
	dir := t.TempDir()
	valid, corrupt := builtOfKind(t, "valid"), builtOfKind(t, "corrupt")
	for _, c := range []struct {
		cmd  string
		b    *vhdgen.Built
		kind string
	}{
		{"kill -SEGV $$; cat {}", valid, KindCrash},
		{"cat {} >/dev/null; sleep 5", valid, KindHang},
		{"false {}", valid, KindRefusedValid},
		{"true {}", corrupt, KindAcceptedInvalid},
		{"true {}", valid, ""},
		{"false {}", corrupt, ""},
	} {
		tg, err := NewTarget(c.cmd, "", 300*time.Millisecond, false)
		if err != nil {
			t.Fatal(err)
		}
		top, err := c.b.Write(filepath.Join(dir, "case"))
		if err != nil {
			t.Fatal(err)
		}
		f := Classify(tg, c.b, tg.Read(context.Background(), top, dir))
		if c.b == valid {
			checkValid(t, top)
		}
		if got := kindOf(f); got != c.kind {
			t.Errorf("%q on a %s case: %q (%v), want %q", c.cmd, c.b.Kind(), got, f, c.kind)
		}
	}
	if _, err := NewTarget("mytool", "", time.Second, false); err == nil || !strings.Contains(err.Error(), "{}") {
		t.Errorf("a command without {}: %v", err)
	}
	if _, err := NewTarget("no-such-vhd-tool {}", "", time.Second, false); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("a command that does not exist: %v", err)
	}
}

// checkValid ends a test that wrote a valid image: vhdkit's check finds
// nothing fatal (data under clear bits, put there on purpose, is a
// warning).
func checkValid(t *testing.T, path string) {
	t.Helper()
	rep, err := engine.CheckPath(path, engine.CheckOptions{})
	if err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	for _, p := range rep.Problems {
		if p.Fatal {
			t.Errorf("check %s: %s", path, p)
		}
	}
}

func kindOf(f *Finding) string {
	if f == nil {
		return ""
	}
	return f.Kind
}

// builtOfKind is the first generated case of a kind.
func builtOfKind(t *testing.T, kind string) *vhdgen.Built {
	for i := range 100 {
		b, err := vhdgen.Generate(1, i, vhdgen.DefaultOptions).Build()
		if err == nil && b.Kind() == kind {
			return b
		}
	}
	t.Fatalf("no %s case in 100", kind)
	return nil
}

// TestRunJobs: with two jobs, every case runs once, the cursor counts
// them all and each signature is written once.
func TestRunJobs(t *testing.T) {
	out := t.TempDir()
	sum, err := Run(context.Background(), Config{Target: parentBlind{}, Out: out, Seed: 4, Jobs: 2, MaxCases: 30, MinimiseTime: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Cases != 30 {
		t.Errorf("%d cases, want 30", sum.Cases)
	}
	seen := map[string]bool{}
	for _, r := range sum.New {
		if seen[r.Signature] {
			t.Errorf("signature %q written twice", r.Signature)
		}
		seen[r.Signature] = true
	}
	if first, err := loadCursor(out, 4); err != nil || first != 30 {
		t.Errorf("cursor %d, %v; want 30", first, err)
	}
}
