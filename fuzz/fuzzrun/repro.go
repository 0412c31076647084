package fuzzrun

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Repro runs the target of the finding in dir again on its images (as
// they are in dir now) and classifies what it sees against the case's
// expected view; nil when the finding no longer shows.
func Repro(ctx context.Context, dir string, t Target) (*Report, *Finding, error) {
	r, err := ReadReport(dir)
	if err != nil {
		return nil, nil, err
	}
	b, err := r.Case.Build()
	if err != nil {
		return r, nil, fmt.Errorf("rebuild the case of %s: %w", dir, err)
	}
	if len(r.Images) == 0 {
		return r, nil, fmt.Errorf("%s/report.json names no images", dir)
	}
	work, err := os.MkdirTemp("", "vhd-fuzz-repro-")
	if err != nil {
		return r, nil, err
	}
	defer os.RemoveAll(work)
	o := t.Read(ctx, filepath.Join(dir, r.Images[0]), work)
	return r, Classify(t, b, o), nil
}
