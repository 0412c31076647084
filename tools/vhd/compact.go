package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/chains"
)

var compactCmd = &command{
	name:    "compact",
	args:    "[flags] IMAGE",
	summary: "give back the space of blocks that hold only zeros",
	doc: `Rewrites a dynamic or differencing image without the blocks that hold
only zeros (in a differencing image, only where no ancestor holds data:
there its zeros are data), with the rest in disk order. The image keeps
its UUID, timestamp and parent link, so its children stay valid, and a
Xen (blktap) image its creator and hidden flag, with a fresh batmap. It is
written to a temporary file beside IMAGE and renamed over it: a crash
leaves the old image or the new one. Images whose saved-state flag is
set are refused. Zero the free space inside the guest first (for
example 'sdelete -z' on Windows) to make its deleted files' blocks zero.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		noProgress := fs.Bool("no-progress", false, "never show a progress bar")
		asJSON := fs.Bool("json", false, "print the sizes before and after as JSON")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "IMAGE"); err != nil {
				return err
			}
			bar := maybeBar(e, *noProgress)
			res, err := chains.Compact(ctx, args[0], chains.CompactOptions{Open: cf.options(false), Progress: bar.update})
			bar.finish()
			if err != nil {
				return err
			}
			if *asJSON {
				return writeJSON(e, res)
			}
			host := "reclaimed " + human(res.Reclaimed()) + " on the host"
			if g := res.HostGrowth(); g > 0 {
				host = "the host gives it " + human(g) + " more (its blocks are laid out anew, aligned)"
			}
			fmt.Fprintf(e.stdout, "compacted %s: freed %d blocks; file %s -> %s; %s\n",
				args[0], res.BlocksFreed, human(res.FileBefore), human(res.FileAfter), host)
			return nil
		}
	},
}
