package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/engine"
)

var createCmd = &command{
	name:    "create",
	args:    "[--type fixed|dynamic] --size SIZE [--block-size SIZE] FILE",
	summary: "make a new, empty VHD",
	doc: `Creates FILE, which must not exist, as an empty VHD of the given size:
a fixed image (the whole disk, followed by the footer; the host file is
sparse until written) or a dynamic one (blocks allocated on first
write). The size must be a whole number of 512-byte sectors, at most
2040 GiB. New images carry Hyper-V's creator ("win "), so Windows, QEMU
and libvhdi all see the size asked for.

` + sizeHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		typ := fs.StringP("type", "t", "dynamic", "image type: fixed or dynamic")
		var size, bs sizeFlag
		fs.VarP(&size, "size", "s", "virtual size of the disk (required)")
		fs.Var(&bs, "block-size", "block size of a dynamic image: a power of two from 512 bytes to 256M (default 2M)")
		asJSON := fs.Bool("json", false, "print {file, type, virtual_size, block_size, uuid} as JSON")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "FILE"); err != nil {
				return err
			}
			opts := engine.CreateOptions{Size: size.n, BlockSize: bs.n}
			switch *typ {
			case "fixed":
				opts.Type = engine.TypeFixed
				if bs.set {
					return usageErr("--block-size applies only to dynamic images")
				}
			case "dynamic":
				opts.Type = engine.TypeDynamic
			default:
				return usageErr("--type %q: want fixed or dynamic", *typ)
			}
			if !size.set {
				return usageErr("--size is required (for example --size 10G)")
			}
			if err := engine.ValidateSize(size.n); err != nil {
				return usageErr("--size: %v", err)
			}
			img, err := engine.Create(args[0], opts)
			if err != nil {
				return err
			}
			id, bsize := img.Footer().UUID, img.BlockSize()
			if err := img.Close(); err != nil {
				return err
			}
			if *asJSON {
				return writeJSON(e, map[string]any{"file": args[0], "type": *typ, "virtual_size": size.n, "block_size": bsize, "uuid": id.String()})
			}
			fmt.Fprintf(e.stdout, "created %s: %s VHD, virtual size %s", args[0], *typ, human(size.n))
			if bsize > 0 {
				fmt.Fprintf(e.stdout, ", block size %s", human(bsize))
			}
			fmt.Fprintf(e.stdout, ", uuid %s\n", id)
			return nil
		}
	},
}
