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
	doc: `Points CHILD at PARENT: rewrites its parent name and locators (W2ru,
W2ku, MacX) for PARENT's place, atomically (a crash leaves the old link
or the new one). PARENT must have the UUID CHILD recorded (its size may
differ: past a parent's end the chain reads zeros);
--ignore-uuid accepts another UUID (only right when PARENT holds the
same data, e.g. a copy a tool gave a new UUID). CHILD then records
PARENT's timestamp as it is now, so this is also how to re-link a child
refused because its parent's time changed while its data did not (a
tool rewrote the footer, Xen's tools touched the file).

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
