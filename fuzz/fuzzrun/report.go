package fuzzrun

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"vhdkit/fuzz/vhdgen"
)

// Report is a finding as written to OUT/findings/ID/report.json.
type Report struct {
	ID            string   `json:"id"`
	Target        string   `json:"target"`
	TargetVersion string   `json:"target_version"`
	Kind          string   `json:"kind"`
	Detail        string   `json:"detail"`
	Signature     string   `json:"signature"`
	Images        []string `json:"images"` // top first, in this folder
	Command       []string `json:"command"`
	Seed          uint64   `json:"seed"`
	Index         int      `json:"index"` // the case vhdgen.Generate(seed, index) made
	// Expected is the reference's view of the images.
	Expected Expected `json:"expected"`
	// Original describes the case before minimisation.
	Original  string      `json:"original"`
	Minimised bool        `json:"minimised"`
	Case      vhdgen.Case `json:"case"` // the minimised case, which rebuilds the images
	Found     time.Time   `json:"found"`
}

// Expected is a case's expected view, as the manifest and reports give it.
type Expected struct {
	Kind     string `json:"kind"` // valid or corrupt
	Type     string `json:"type,omitempty"`
	Size     int64  `json:"size,omitempty"`
	Digest   string `json:"sha256,omitempty"` // of the raw disk
	Refused  bool   `json:"refused,omitempty"`
	Why      string `json:"why,omitempty"` // what makes it corrupt
	Mutation string `json:"mutation,omitempty"`
}

// ExpectedOf is b's expected view.
func ExpectedOf(b *vhdgen.Built) Expected {
	e := Expected{Kind: b.Kind()}
	if b.Case.Mutation != nil && b.Applied {
		e.Mutation = b.Case.Mutation.Name
	}
	if b.View == nil {
		e.Refused, e.Why = true, b.Refusal
		return e
	}
	e.Type, e.Size, e.Digest = b.View.Type, b.View.Size, b.View.Digest()
	return e
}

// findingID names a finding by its target and signature, so a known one
// is recognised in a later run.
func findingID(target, signature string) string {
	s := sha256.Sum256([]byte(target + "\x00" + signature))
	return hex.EncodeToString(s[:5])
}

// writeFinding writes the images and report.json under out/findings/ID.
func writeFinding(out string, r *Report, b *vhdgen.Built) (string, error) {
	dir := filepath.Join(out, "findings", r.ID)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if _, err := b.Write(dir); err != nil {
		return "", err
	}
	r.Images = b.Case.Names()
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "report.json"), append(data, '\n'), 0o644)
}

// ReadReport reads dir/report.json.
func ReadReport(dir string) (*Report, error) {
	data, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		return nil, fmt.Errorf("read the finding: %w", err)
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s/report.json is not a finding report: %w", dir, err)
	}
	return &r, nil
}

// knownFindings are the reports already in out/findings, by signature.
func knownFindings(out, target string) map[string]*Report {
	known := map[string]*Report{}
	dirs, _ := filepath.Glob(filepath.Join(out, "findings", "*"))
	sort.Strings(dirs)
	for _, d := range dirs {
		if r, err := ReadReport(d); err == nil && r.Target == target {
			known[r.Signature] = r
		}
	}
	return known
}
