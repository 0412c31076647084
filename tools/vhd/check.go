package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/internal/shq"
)

var checkCmd = &command{
	name:    "check",
	args:    "[--json] IMAGE",
	summary: "check an image's structure and list every problem",
	doc: `Checks the footer, its copy at offset 0, the dynamic header, the parent
locators, the block allocation table and each allocated block's sector
bitmap: data under a clear bit (a write that never reached a flush,
which reads do not show but readers that ignore bitmaps would) is
reported. Only blocks that are not full are read, and only where the
file holds data. It reads the image without locking it, so it can check
an image in use. Each problem is printed as "error" (the image is
unusable or unsafe to write) or "warning", with its code and file
offset, and "(vhd repair fixes this)" where a repair can. A
differencing image's chain is opened too, as every command opens it: a
parent that is not found (parent-unresolved), was written after the
child was made (parent-modified), does not fit (parent-mismatch), or a
merge left unfinished (merge-unfinished) is a warning, as Test-VHD
fails such a disk; the messages say how to re-link or finish.

Exit status: 0 no problems, 3 problems found, 1 the image could not be
read or is not a VHD (a qcow2, VMDK, compressed file... is named, and
nothing is offered to repair). JSON keys: file, ok, type, virtual_size,
file_size, allocated_blocks, problems [{code, fatal, fixable, offset,
message}] (offset -1 when not known). The code says what kind of problem
it is (docs/CLI.md lists them); match codes, not messages.`,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		asJSON := fs.Bool("json", false, "print the report as JSON (keys above)")
		fs.Bool("bitmaps", false, "accepted for old scripts: bitmaps are always checked now")
		fs.MarkHidden("bitmaps")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "IMAGE"); err != nil {
				return err
			}
			path := args[0]
			rep, err := engine.CheckPath(path, engine.CheckOptions{})
			if errors.Is(err, engine.ErrNoFooter) {
				return fmt.Errorf("%s: %w", path, err) // the engine's message names no file
			}
			if err != nil {
				return err
			}
			if rep.Type == engine.TypeDifferencing.String() && !hasFatal(rep) {
				if p := chains.LinkProblem(path, cf.options(true)); p != nil {
					rep.Problems = append(rep.Problems, *p)
				}
			}
			if *asJSON {
				out := struct {
					File string `json:"file"`
					OK   bool   `json:"ok"`
					*engine.Report
				}{path, rep.OK(), rep}
				if out.Problems == nil {
					out.Problems = []engine.Problem{}
				}
				if err := writeJSON(e, out); err != nil {
					return err
				}
			} else {
				printReport(e, path, rep)
			}
			if !rep.OK() {
				return exitStatus(exitProblems)
			}
			return nil
		}
	},
}

func printReport(e *env, path string, rep *engine.Report) {
	fixable := 0
	for _, p := range rep.Problems {
		fmt.Fprintf(e.stdout, "%s: %s\n", path, p)
		if p.Fixable {
			fixable++
		}
	}
	if rep.OK() {
		fmt.Fprintf(e.stdout, "%s: no problems found (%s VHD, virtual size %s, %d blocks allocated)\n", path, rep.Type, human(rep.Size), rep.Blocks)
		return
	}
	fmt.Fprintf(e.stdout, "%s: %d problem(s) found", path, len(rep.Problems))
	switch {
	case fixable > 0 && !unfixable(rep):
		fmt.Fprintf(e.stdout, ", %d of them fixable: run 'vhd repair %s'", fixable, shq.Quote(path))
	case fixable > 0:
		fmt.Fprintf(e.stdout, ", %d of them fixable, but 'vhd repair' changes nothing while the others remain", fixable)
	}
	if salvageable(rep) {
		fmt.Fprintf(e.stdout, "; 'vhd convert --to dynamic --salvage %s COPY.vhd' copies all that can still be read, and lists what cannot", shq.Quote(path))
	}
	fmt.Fprintln(e.stdout)
}

// salvageable reports whether the report's fatal problems are all ones
// convert --salvage reads past: misplaced blocks, and the footer copy
// standing in for a lost footer.
func salvageable(rep *engine.Report) bool {
	misplaced := false
	for _, p := range rep.Problems {
		switch {
		case p.Code == engine.CodeBATOutOfRange || p.Code == engine.CodeBATOverlap:
			misplaced = true
		case p.Fatal && !p.Fixable:
			return false
		}
	}
	return misplaced
}

// unfixable reports whether a fatal problem repair cannot fix is among
// the report's: then repair changes nothing (engine.Repair).
func unfixable(rep *engine.Report) bool {
	for _, p := range rep.Problems {
		if p.Fatal && !p.Fixable {
			return true
		}
	}
	return false
}

func hasFatal(rep *engine.Report) bool {
	for _, p := range rep.Problems {
		if p.Fatal {
			return true
		}
	}
	return false
}
