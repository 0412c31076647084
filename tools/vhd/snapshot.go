package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/pflag"

	"vhdkit/chains"
)

var snapshotCmd = &command{
	name:    "snapshot",
	args:    "[flags] IMAGE NEWTOP",
	summary: "freeze IMAGE as a read-only parent and start a new differencing image on it",
	doc: `Creates NEWTOP, a differencing image whose parent is IMAGE (with W2ku,
W2ru and MacX locators), and removes IMAGE's write permission: from now
on writes go to NEWTOP, and IMAGE must not change (a parent modified
after its child was made is refused when the child is opened).

Refused while IMAGE has an undo disk (commit or discard it first, with
'vhd undo') or another process has it open for writing (a 'vhd mount'
or 'vhd serve': the error names it). Processes that only read IMAGE
(mounts of its other children, read-only exports) do not stop it.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		var bs blockSizeFlag
		fs.Var(&bs, "block-size", "block size of NEWTOP (default: IMAGE's, or 2M)")
		asJSON := fs.Bool("json", false, "print {image, top, top_uuid, depth} as JSON")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "IMAGE", "NEWTOP"); err != nil {
				return err
			}
			if swapped(args[0], args[1]) {
				return usageErr("%s does not exist and %s does: IMAGE comes first, then the new top: vhd snapshot %s %s", args[0], args[1], args[1], args[0])
			}
			c, err := chains.Snapshot(args[0], args[1], chains.CreateOptions{BlockSize: bs.n, Open: cf.options(true)})
			if err != nil {
				return err
			}
			depth, topUUID := c.Depth(), c.Top().Footer().UUID.String()
			if err := c.Close(); err != nil {
				return err
			}
			if *asJSON {
				return writeJSON(e, map[string]any{"image": args[0], "top": args[1], "top_uuid": topUUID, "depth": depth})
			}
			fmt.Fprintf(e.stdout, "%s is now read-only; writes go to %s (a chain of %d layers)\n", args[0], args[1], depth)
			return nil
		}
	},
}

// swapped reports whether a command that takes an existing file and then
// a new one was given them the other way round: the first does not
// exist and the second does.
func swapped(existing, fresh string) bool {
	_, errE := os.Stat(existing)
	_, errF := os.Stat(fresh)
	return errors.Is(errE, fs.ErrNotExist) && errF == nil
}
