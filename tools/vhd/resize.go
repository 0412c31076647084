package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/vhdfs"
)

var resizeCmd = &command{
	name:    "resize",
	args:    "--size [+|-]SIZE | --to-minimum [--shrink] [--force] IMAGE",
	summary: "grow (or, when asked, shrink) a fixed or dynamic image",
	doc: `Sets IMAGE's virtual size. qemu-img's order works too: vhd resize IMAGE
SIZE, +SIZE, or after -- a -SIZE (vhd resize --shrink -- IMAGE -1G).
Growing is crash-safe: a dynamic image's new
metadata (a bigger block table when needed) is written where the image
has room, before its first data block (the table grows in place when the
space after it is free), and committed by the footer; a fixed image's
footer moves. When there is no room before the first block the metadata
goes after the data, and vhd says so: Xen's vhd-util check rejects such
an image ('vhd compact' lays it out anew). A Xen (blktap) image keeps
its creator, hidden flag and batmap. Shrinking needs --shrink and is
refused if the part cut off holds any data, or (unless --force) if it
would cut a partition or a GPT's backup table, even an empty one. --size +SIZE grows by SIZE
and --size -SIZE shrinks by SIZE (no --shrink needed: the sign asks for
it); --to-minimum shrinks to the end of the last partition (Resize-VHD
-ToMinimumSize). On a GPT disk the backup table (header and entry array,
in the disk's last sectors) moves first to just after the last
partition, and the primary header and the protective MBR follow; a crash
at any point leaves a valid table, and running the resize again finishes
the job. A GPT whose headers or entry arrays are damaged or disagree is
refused. A disk already at its minimum is left as it is. The partitions
and file systems inside are not touched: grow them from the guest.
Differencing images take their parent's size, and an image other
differencing images depend on is refused unless --force.

` + sizeHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		var size resizeSizeFlag
		fs.VarP(&size, "size", "s", "the new virtual size, or +SIZE / -SIZE to grow or shrink by that much")
		toMin := fs.Bool("to-minimum", false, "shrink to the end of the last partition (and a GPT's backup table)")
		shrink := fs.Bool("shrink", false, "allow a smaller size (only if the part cut off is empty)")
		force := fs.Bool("force", false, "resize although differencing images depend on IMAGE (they stop opening), or although the new size cuts a partition")
		asJSON := fs.Bool("json", false, "print {image, size, old_size, changed} as JSON (sizes in bytes)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 2 && !size.set && !*toMin {
				// qemu-img resize FILE [+|-]SIZE (a negative one after --)
				if err := size.Set(args[1]); err != nil {
					return usageErr("SIZE %q: %v", args[1], err)
				}
				args = args[:1]
			}
			if err := wantArgs(args, "IMAGE"); err != nil {
				return err
			}
			if size.set == *toMin {
				return usageErr("give --size (for example --size 20G or --size +10G) or --to-minimum")
			}
			n, old, gpt, err := resizeTarget(args[0], &size, *toMin, *force)
			if err != nil {
				return err
			}
			if *toMin && n >= old && old > 0 {
				if *asJSON {
					return writeJSON(e, map[string]any{"image": args[0], "size": old, "old_size": old, "changed": false})
				}
				fmt.Fprintf(e.stdout, "%s is already at its minimum size, %s; nothing changed\n", args[0], human(old))
				return nil
			}
			if err := engine.ValidateSize(n); err != nil {
				return usageErr("--size: %v", err)
			}
			allowShrink := *shrink || *toMin || size.sign < 0
			if n < old && !allowShrink {
				return usageErr("shrinking %s from %s to %s needs --shrink (or --size -N); it is refused anyway if the part cut off holds data", args[0], human(old), human(n))
			}
			opts := chains.ResizeOptions{Shrink: allowShrink, Force: *force, Open: cf.options(false)}
			if gpt {
				opts.Prepare = func(img *engine.Image) error { return moveGPTBackup(img, n) }
			}
			err = chains.Resize(args[0], n, opts)
			if errors.Is(err, chains.ErrHasChildren) {
				return fmt.Errorf("%w (--force resizes anyway, and they stop opening)", err)
			}
			if err != nil {
				return err
			}
			noteMetadataAfterData(e, "resize", args[0])
			if *asJSON {
				return writeJSON(e, map[string]any{"image": args[0], "size": n, "old_size": old, "changed": n != old})
			}
			fmt.Fprintf(e.stdout, "%s is now %s (was %s)\n", args[0], human(n), human(old))
			return nil
		}
	},
}

// resizeTarget works out the size asked for from IMAGE's current size
// and, for --to-minimum, its partition table; it returns the current
// size too (0 for a differencing image, which is not resized), and
// whether a GPT's backup table must move first.
func resizeTarget(path string, size *resizeSizeFlag, toMin, force bool) (n, old int64, gpt bool, err error) {
	img, err := engine.Open(path, engine.Options{ReadOnly: true})
	if err != nil {
		return 0, 0, false, err
	}
	defer img.Close()
	old = img.Size()
	if img.Type() == engine.TypeDifferencing {
		return old, 0, false, nil // chains.Resize says why not
	}
	if toMin {
		n, gpt, err = minimumSize(img)
	} else if n, err = size.target(old); err == nil && n < old && !force {
		err = refuseCuttingPartitions(img, n)
	}
	return n, old, gpt, err
}

// refuseCuttingPartitions refuses a shrink to n that would cut a
// partition, or a GPT's backup table (which fills the disk's last
// sectors), even where the part cut off reads zeros: Resize-VHD will not
// shrink below the last partition either. A table that cannot be read
// says nothing: the data check of the shrink still applies.
func refuseCuttingPartitions(img *engine.Image, n int64) error {
	t, err := vhdfs.ReadTable(img, img.Size())
	if err != nil || t.Kind == "" {
		return nil
	}
	if t.Kind == "gpt" {
		return fmt.Errorf("%s has a GPT partition table, whose backup copy fills the disk's last sectors: shrinking to %s would cut it off; use --to-minimum, which moves it first (or --force to cut anyway)", img.Name(), human(n))
	}
	for _, p := range t.Partitions {
		if end := p.Start + p.Len; end > n {
			return fmt.Errorf("shrinking %s to %s would cut partition %d, which ends at %s: shrink its file system and partition first, or shrink to its end with --to-minimum (or --force to cut anyway)", img.Name(), human(n), p.Number, human(end))
		}
	}
	return nil
}
