package fuzzrun

import (
	"context"
	"time"

	"vhdkit/fuzz/vhdgen"
)

// maxShrinkTries bounds the target runs one minimisation makes.
const maxShrinkTries = 400

// minimise shrinks b while the target still shows a finding of f's
// signature: greedily, the first smaller variant that keeps it replaces
// the case, until none does or the time runs out. It returns the
// smallest case, its finding, the commands that show it and whether
// anything was cut.
func (r *runner) minimise(ctx context.Context, b *vhdgen.Built, f *Finding, work string) (*vhdgen.Built, *Finding, []string, bool) {
	budget := r.cfg.MinimiseTime
	if budget <= 0 {
		budget = time.Minute
	}
	deadline := time.Now().Add(budget)
	_, o, _ := r.try(ctx, b.Case, work)
	cmds := o.Commands
	shrunk, tries := false, 0
	for improved := true; improved; {
		improved = false
		for _, v := range b.Case.Shrinks() {
			if tries >= maxShrinkTries || time.Now().After(deadline) || ctx.Err() != nil {
				return b, f, cmds, shrunk
			}
			tries++
			vb, vo, err := r.try(ctx, v, work)
			if err != nil {
				continue
			}
			if vf := Classify(r.cfg.Target, vb, vo).showing(f.Signature); vf != nil {
				b, f, cmds, shrunk, improved = vb, vf, vo.Commands, true, true
				break
			}
		}
	}
	return b, f, cmds, shrunk
}
