package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/chains"
)

var setParentCmd = &command{
	name:    "set-parent",
	args:    "[--ignore-uuid] [flags] CHILD PARENT",
	summary: "re-link a differencing image to its parent after files moved",
	doc: `Points CHILD at PARENT: rewrites its parent name and locators (W2ku,
W2ru, MacX) for PARENT's place, atomically (a crash leaves the old link
or the new one). PARENT must have the UUID and size CHILD recorded, and
must not have changed since CHILD was made; --ignore-uuid accepts
another UUID (only right when PARENT holds the same data, e.g. a copy a
tool gave a new UUID) and --accept-modified-parent a parent whose
timestamp changed (only right when its data did not: CHILD then records
the new time and opens without complaint).

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		ignore := fs.Bool("ignore-uuid", false, "link even if PARENT's UUID is not the one CHILD recorded")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "CHILD", "PARENT"); err != nil {
				return err
			}
			if err := chains.SetParent(args[0], args[1], chains.SetParentOptions{IgnoreUUID: *ignore, Open: cf.options(true)}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s now names %s as its parent\n", args[0], args[1])
			noteMetadataAfterData(e, "set-parent", args[0])
			return nil
		}
	},
}
