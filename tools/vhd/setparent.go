package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/chains"
)

var setParentCmd = &command{
	name:    "set-parent",
	args:    "[--ignore-uuid] [--accept-modified-parent] [flags] CHILD PARENT",
	summary: "re-link a differencing image to its parent after files moved",
	doc: `Points CHILD at PARENT: rewrites its parent name and locators (W2ru,
W2ku, MacX) for PARENT's place, atomically (a crash leaves the old link
or the new one). PARENT must have the UUID CHILD recorded (its size may
differ: past a parent's end the chain reads zeros);
--ignore-uuid accepts another UUID (only right when PARENT holds the
same data, e.g. a copy a tool gave a new UUID). PARENT must also have
the time CHILD recorded, in its footer or as its file time (Xen's
tools record that), as when the chain is opened (not a PARENT with
another UUID, linked with --ignore-uuid): a parent written
after CHILD was made is refused, naming both times, because CHILD's
changes may sit over different data. --accept-modified-parent links it
anyway: only right when PARENT's data is known unchanged (a tool
rewrote its footer). CHILD then records PARENT's footer time as it is
now. An image cannot be its own parent.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		ignore := fs.Bool("ignore-uuid", false, "link even if PARENT's UUID is not the one CHILD recorded")
		asJSON := fs.Bool("json", false, "print {child, parent} as JSON")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "CHILD", "PARENT"); err != nil {
				return err
			}
			opts := chains.SetParentOptions{IgnoreUUID: *ignore, AcceptModified: cf.acceptModified, Open: cf.options(true)}
			if err := chains.SetParent(args[0], args[1], opts); err != nil {
				return err
			}
			noteMetadataAfterData(e, "set-parent", args[0])
			if *asJSON {
				return writeJSON(e, map[string]any{"child": args[0], "parent": args[1]})
			}
			fmt.Fprintf(e.stdout, "%s now names %s as its parent\n", args[0], args[1])
			return nil
		}
	},
}
