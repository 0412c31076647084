package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"

	"vhdkit/chains"
)

var undoCmd = &command{
	name:    "undo",
	args:    "status|commit|discard [flags] IMAGE",
	summary: "keep, commit or discard an image's undo disk (.vud)",
	doc: `An undo disk (IMAGE's name with .vud, beside it) is a differencing image
that takes every write made to IMAGE through 'vhd mount' or 'vhd serve'
while IMAGE itself stays unchanged. Keeping it is the default.

  status   whether IMAGE has an undo disk and how much it holds: the
           bytes marked written (what commit copies), in how many blocks
  commit   merge the undo disk into IMAGE and delete it (refused if
           other differencing images depend on IMAGE, unless --force)
  discard  delete the undo disk: IMAGE stays exactly as it was

While the undo disk exists, IMAGE is not written any other way: a mount
or export writing IMAGE itself, a resize of it or a merge into it is
refused until the undo disk is committed or discarded. An undo disk
that holds no changes when the mount or server that made it closes it
is deleted then.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		force := fs.Bool("force", false, "commit although other differencing images depend on IMAGE")
		asJSON := fs.Bool("json", false, "status as JSON: {image, undo_disk, exists, written_bytes, blocks, allocated_bytes, file_bytes}")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 1 && !slices.Contains([]string{"status", "commit", "discard"}, args[0]) {
				return usageErr("missing the verb: vhd undo status|commit|discard %s", args[0])
			}
			if err := wantArgs(args, "status|commit|discard", "IMAGE"); err != nil {
				return err
			}
			image := args[1]
			switch args[0] {
			case "status":
				st, err := chains.Status(image, cf.options(true))
				if err != nil {
					return err
				}
				if *asJSON {
					return writeJSON(e, st)
				}
				if !st.Exists {
					fmt.Fprintf(e.stdout, "%s has no undo disk\n", image)
					return nil
				}
				if st.Written == 0 {
					fmt.Fprintf(e.stdout, "%s has an undo disk, %s, holding no changes ('vhd undo discard %s' removes it)\n", image, st.UndoDisk, image)
					return nil
				}
				fmt.Fprintf(e.stdout, "%s has an undo disk, %s, holding %s ('vhd undo commit' keeps them in the image, 'vhd undo discard' drops them)\n", image, st.UndoDisk, undoHolding(st))
			case "commit":
				res, err := chains.Commit(ctx, image, chains.MergeOptions{Force: *force, Open: cf.options(false)})
				if errors.Is(err, chains.ErrHasChildren) {
					return fmt.Errorf("%w (--force commits anyway, and they become invalid)", err)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "committed %s of changes into %s; removed %s\n", human(res.Copied), image, chains.UndoPath(image))
			case "discard":
				if err := chains.Discard(image); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "discarded %s; %s is as it was\n", chains.UndoPath(image), image)
			default:
				return usageErr("%q: want status, commit or discard", args[0])
			}
			return nil
		}
	},
}

// undoHolding says what an undo disk holds in the measure commits report
// (the bytes its sector bitmaps mark written: what a commit copies), and
// the blocks it takes for them.
func undoHolding(st *chains.UndoStatus) string {
	return fmt.Sprintf("%s of changes in %s, %s allocated", human(st.Written), plural(int(st.Blocks), "block"), humanize.IBytes(uint64(st.Allocated)))
}
