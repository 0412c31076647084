package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/chains"
)

var rebaseCmd = &command{
	name:    "rebase",
	args:    "[flags] CHILD NEWPARENT",
	summary: "give a differencing image another parent, keeping the data it shows",
	doc: `Makes NEWPARENT the parent of the differencing image CHILD while CHILD
goes on showing the same disk: where CHILD holds nothing and NEWPARENT's
chain reads other data than CHILD's old parent's chain, the old data is
first copied into CHILD; then CHILD is linked to NEWPARENT (its UUID,
timestamp and locators), atomically. NEWPARENT must have CHILD's size
and must not read from CHILD. This is qemu-img rebase -b NEWPARENT.

Crash-safe: the copy lands in CHILD (and is flushed) while it still
links to its old parent, and each sector copied holds what that parent
showed, so CHILD reads the same at every moment; the new link is written
past its end and committed by its footer. Interrupted, run it again.

CHILD is written, so a CHILD that other differencing images (or an undo
disk) depend on is refused: writing it would invalidate them. Merge or
remove them first.

Only re-linking, with no copy (qemu-img rebase -u, for a parent that
moved or was copied with a new UUID and holds the same data), is
'vhd set-parent [--ignore-uuid] CHILD PARENT'.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		backing := fs.StringP("backing", "b", "", "NEWPARENT, as qemu-img rebase -b names it (instead of the second argument)")
		unsafe := fs.BoolP("unsafe", "u", false, "qemu-img's unsafe mode: not here; it answers with the vhd set-parent command")
		asJSON := fs.Bool("json", false, "print {child, old_parent, new_parent, copied_bytes} as JSON")
		noProgress := fs.Bool("no-progress", false, "never show a progress bar")
		cf := addChainFlags(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if *backing != "" {
				args = append(args, *backing)
			}
			if err := wantArgs(args, "CHILD", "NEWPARENT"); err != nil {
				return err
			}
			if *unsafe {
				return usageErr("re-linking without copying is 'vhd set-parent --ignore-uuid %s %s' (right only if the new parent holds the same data)", args[0], args[1])
			}
			bar := maybeBar(e, *noProgress)
			res, err := chains.Rebase(ctx, args[0], args[1], chains.RebaseOptions{Open: cf.options(false), Progress: bar.update})
			bar.finish()
			if err != nil {
				return keptOnInterrupt(err, "%s still reads as before, and keeps what was copied into it: run the same command again to finish", args[0])
			}
			if *asJSON {
				return writeJSON(e, map[string]any{"child": args[0], "old_parent": res.OldParent, "new_parent": args[1], "copied_bytes": res.Copied})
			}
			fmt.Fprintf(e.stdout, "%s now has %s as its parent (it was %s); copied %s where they differ, so it reads as before\n", args[0], args[1], res.OldParent, human(res.Copied))
			return nil
		}
	},
}
