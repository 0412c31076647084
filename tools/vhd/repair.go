package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/engine"
)

var repairCmd = &command{
	name:    "repair",
	args:    "IMAGE",
	summary: "fix the damage that can be fixed without guessing at data",
	doc: `Fixes, in place: a damaged footer at the end of the file (rewritten from
the copy at offset 0), a damaged or stale copy at offset 0, space after
the last allocated block (blocks whose allocation never reached a
flush), data under clear bitmap bits (writes that never reached a
flush: zeroed, so readers that ignore bitmaps read what vhd reads), and
the batmap of an image Xen's blktap made when it marks a block full that
is not or is damaged (rebuilt from the bitmaps; see docs/BLKTAP.md).
It refuses, changing nothing, when the image has damage it cannot fix
safely, and lists that damage (exit status 1), and when the file is not
a VHD (another format, named). Close every program
using the image first: repair takes it for writing.

Prints each thing it did, or "nothing to repair", then any problems
'vhd check' still finds that repair leaves alone (warnings). JSON keys:
file, repaired (what it did, in words; [] for nothing), left (the
problems left, as 'vhd check --json' lists them), and refused (why,
when it changed nothing: then left lists the damage; exit status 1).`,
	setup: func(fs *pflag.FlagSet) runFunc {
		fs.Bool("bitmaps", false, "accepted for old scripts: bitmaps are always repaired now")
		fs.MarkHidden("bitmaps")
		asJSON := fs.Bool("json", false, "print what was repaired and what is left as JSON (keys above)")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "IMAGE"); err != nil {
				return err
			}
			path := args[0]
			holes := bitmapHoles(path)
			did, err := engine.Repair(path, engine.RepairOptions{})
			if *asJSON && err != nil && errors.Is(err, engine.ErrCorrupt) && !errors.Is(err, engine.ErrOtherFormat) {
				// Refused, nothing changed: the JSON says why, with the
				// problems check lists; the error goes to stderr too.
				if rep, cerr := engine.CheckPath(path, engine.CheckOptions{}); cerr == nil {
					writeRepairJSON(e, path, did, rep.Problems, err.Error())
				}
				return err
			}
			for _, d := range did {
				if !*asJSON || err != nil {
					fmt.Fprintf(e.stdout, "%s: %s\n", path, d)
				}
			}
			if err != nil {
				return err
			}
			rep, err := engine.CheckPath(path, engine.CheckOptions{})
			if err != nil {
				return err
			}
			// Once the footer is back, check can no longer tell blocks an
			// unfinished copy lost from empty ones: say what was seen.
			rep.Problems = append(holes, rep.Problems...)
			if *asJSON {
				return writeRepairJSON(e, path, did, rep.Problems, "")
			}
			if len(did) == 0 {
				fmt.Fprintf(e.stdout, "%s: nothing to repair\n", path)
			}
			for _, p := range rep.Problems {
				fmt.Fprintf(e.stdout, "%s: left as is: %s\n", path, p)
			}
			return nil
		}
	},
}

// writeRepairJSON prints repair --json: what was done, the problems
// left, and why the repair was refused ("" when it was not).
func writeRepairJSON(e *env, path string, did []string, left []engine.Problem, refused string) error {
	out := struct {
		File     string           `json:"file"`
		Repaired []string         `json:"repaired"`
		Left     []engine.Problem `json:"left"`
		Refused  string           `json:"refused,omitempty"`
	}{path, []string{}, []engine.Problem{}, refused}
	out.Repaired = append(out.Repaired, did...)
	out.Left = append(out.Left, left...)
	return writeJSON(e, out)
}

// bitmapHoles are the bitmap-hole warnings check gives before a repair:
// blocks a copy cut short never wrote, seen only while the footer at
// the end is missing (engine/bitmap_hole.go).
func bitmapHoles(path string) []engine.Problem {
	rep, err := engine.CheckPath(path, engine.CheckOptions{})
	if err != nil {
		return nil
	}
	var holes []engine.Problem
	for _, p := range rep.Problems {
		if p.Code == engine.CodeBitmapHole {
			holes = append(holes, p)
		}
	}
	return holes
}
