package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/engine"
)

var mergeCmd = &command{
	name:    "merge",
	args:    "[--into ANCESTOR] [--force] CHILD | --to NEW --type fixed|dynamic CHILD",
	summary: "merge a differencing image into its parent, or flatten its chain into a new image",
	doc: `Without --to: copies CHILD's data (and that of every layer between it
and ANCESTOR) into its parent (or ANCESTOR, further up), then deletes
CHILD (and those layers): the parent then reads as CHILD did. CHILD's
own children are moved onto the target, where they read exactly as
before. Other images that depend on what the merge changes or deletes
(found in the layers' folders, their subfolders and the allowed parent
folders) make it refuse, naming them: a child of a layer between CHILD
and ANCESTOR, an undo disk of any of them, another child of the target.
--force lets only the last kind through: they stay, but no longer match
their parent. A crash or Ctrl-C at any moment leaves CHILD's data
intact, and every image of the chain refuses to open until the same
merge is run again to finish it.

With --to: writes the whole chain as one new fixed or dynamic image,
NEW, leaving the chain as it is (like 'vhd convert'). --type applies
only with --to (without it, it is refused: never a merge into the
parent); --to takes a file name, so a --to of exactly fixed, dynamic,
raw, vpc or vhd is refused too (write ./dynamic for a file so named).

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		into := fs.String("into", "", "merge into this ancestor instead of the parent")
		force := fs.Bool("force", false, "merge although other children of the target depend on it (they are left invalid)")
		to := fs.String("to", "", "flatten the chain into this new image instead")
		typ := fs.String("type", "dynamic", "with --to: fixed or dynamic")
		noProgress := fs.Bool("no-progress", false, "never show a progress bar")
		asJSON := fs.Bool("json", false, "print {target, removed, relinked, bytes_copied} as JSON")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "CHILD"); err != nil {
				return err
			}
			if err := checkMergeTarget(*to, fs.Changed("type")); err != nil {
				return err
			}
			bar := maybeBar(e, *noProgress)
			defer bar.finish()
			if *to != "" {
				if *into != "" {
					return usageErr("--to and --into do not go together")
				}
				return flatten(ctx, e, cf, args[0], *to, *typ, bar)
			}
			res, err := chains.Merge(ctx, args[0], chains.MergeOptions{Into: *into, Force: *force, Open: cf.options(false), Progress: bar.update})
			bar.finish()
			if err != nil {
				return err
			}
			if *asJSON {
				return writeJSON(e, res)
			}
			fmt.Fprintf(e.stdout, "merged %s of data into %s; removed %s\n", human(res.Copied), res.Target, strings.Join(res.Removed, ", "))
			if len(res.Relinked) > 0 {
				fmt.Fprintf(e.stdout, "moved onto %s: %s\n", res.Target, strings.Join(res.Relinked, ", "))
			}
			return nil
		}
	},
}

// checkMergeTarget refuses the two slips that would do something else
// than meant: --type without --to (a flatten was meant, and plain merge
// would write into the parent and delete CHILD) and a format name given
// as --to's file name (the flatten would write a file named 'dynamic').
func checkMergeTarget(to string, typeSet bool) error {
	if typeSet && to == "" {
		return usageErr("--type applies to --to NEW.vhd (flatten the chain into a new image); without --to, merge writes CHILD into its parent and deletes it")
	}
	switch to {
	case "fixed", "dynamic", "raw", "vpc", "vhd":
		return usageErr("--to %q: --to takes the new image's file name (to flatten into a file named '%s', write ./%s); the format is --type", to, to, to)
	}
	return nil
}

// flatten writes the whole chain of child as a new image.
func flatten(ctx context.Context, e *env, cf *chainFlags, child, dst, typ string, bar *progressBar) error {
	if typ != "fixed" && typ != "dynamic" {
		return usageErr("--type %q: want fixed or dynamic", typ)
	}
	res, err := engine.Convert(ctx, child, dst, engine.ConvertOptions{To: engine.Format(typ), Progress: bar.update, OpenVHD: chainOpener(cf)})
	bar.finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "flattened the chain of %s into %s (%s VHD, %s); wrote %s of data\n", child, dst, typ, human(res.Size), human(res.Stats.Written))
	return nil
}

// chainOpener opens a VHD with its parents, read-only, and describes it.
func chainOpener(cf *chainFlags) func(string) (engine.Disk, string, error) {
	return func(path string) (engine.Disk, string, error) {
		c, err := chains.Open(path, cf.options(true))
		if err != nil {
			return nil, "", err
		}
		return c, describeChain(c), nil
	}
}

// describeChain says what a convert's source is: "dynamic VHD, a chain
// of 3 layers".
func describeChain(c *chains.Chain) string {
	desc := c.Top().Type().String() + " VHD"
	if c.Depth() > 1 {
		desc += fmt.Sprintf(", a chain of %d layers", c.Depth())
	}
	return desc
}

// maybeBar returns a progress bar when stderr is a terminal, progress
// lines when --progress asks for them elsewhere, else a bar that draws
// nothing (off: --no-progress, -q, --json).
func maybeBar(e *env, off bool) *progressBar {
	switch {
	case off:
		return nil
	case e.stderrTerm:
		return newProgressBar(e)
	case e.forceProgress:
		return newProgressLog(e)
	}
	return nil
}
