package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/engine"
)

var resizeCmd = &command{
	name:    "resize",
	args:    "--size SIZE [--shrink] [--force] IMAGE",
	summary: "grow (or, when asked, shrink) a fixed or dynamic image",
	doc: `Sets IMAGE's virtual size. Growing is crash-safe: a dynamic image's new
metadata (a bigger block table when needed) is written where the image
has room, before its first data block (the table grows in place when the
space after it is free), and committed by the footer; a fixed image's
footer moves. When there is no room before the first block the metadata
goes after the data, and vhd says so: Xen's vhd-util check rejects such
an image ('vhd compact' lays it out anew). A Xen (blktap) image keeps
its creator, hidden flag and batmap. Shrinking needs
--shrink and is refused if the part cut off holds any data. The
partitions and file systems inside are not touched: grow them from the
guest. Differencing images take their parent's size, and an image other
differencing images depend on is refused unless --force.

` + sizeHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		var size sizeFlag
		fs.VarP(&size, "size", "s", "the new virtual size (required)")
		shrink := fs.Bool("shrink", false, "allow a smaller size (only if the part cut off is empty)")
		force := fs.Bool("force", false, "resize although differencing images depend on IMAGE (they stop opening)")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "IMAGE"); err != nil {
				return err
			}
			if !size.set {
				return usageErr("--size is required (for example --size 20G)")
			}
			if err := engine.ValidateSize(size.n); err != nil {
				return usageErr("--size: %v", err)
			}
			err := chains.Resize(args[0], size.n, chains.ResizeOptions{Shrink: *shrink, Force: *force, Open: cf.options(false)})
			if errors.Is(err, chains.ErrHasChildren) {
				return fmt.Errorf("%w (--force resizes anyway, and they stop opening)", err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s is now %s (%d bytes)\n", args[0], human(size.n), size.n)
			noteMetadataAfterData(e, "resize", args[0])
			return nil
		}
	},
}
