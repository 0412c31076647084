package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/engine"
)

var createCmd = &command{
	name:       "create",
	otherFlags: qemuImgCreateFlags,
	args:       "[--type fixed|dynamic] --size SIZE [--block-size SIZE] FILE | ... FILE SIZE | --parent PARENT FILE",
	summary:    "make a new, empty VHD",
	doc: `Creates FILE, which must not exist, as an empty VHD of the given size:
a fixed image (the whole disk, followed by the footer; the host file is
sparse until written) or a dynamic one (blocks allocated on first
write). The size must be a whole number of 512-byte sectors, at most
2040 GiB. New images carry Hyper-V's creator ("win "), so Windows, QEMU
and libvhdi all see the size asked for.

'vhd create FILE SIZE' (qemu-img's order) is 'vhd create --size SIZE FILE'.

--parent PARENT (or -b, or with --type differencing) makes a child of
PARENT (its size is PARENT's):
writes go to FILE, everything else is read from PARENT's chain. FILE
records PARENT's UUID and timestamp, its name and W2ku, W2ru (relative)
and MacX locators. PARENT must not be written afterwards ('vhd snapshot'
also makes it read-only).

` + sizeHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		typ := fs.StringP("type", "t", "dynamic", "image type: fixed, dynamic or differencing")
		var size sizeFlag
		var bs blockSizeFlag
		fs.VarP(&size, "size", "s", "virtual size of the disk (required)")
		fs.Var(&bs, "block-size", "block size of a dynamic image: a power of two from 512 bytes to 256M (default 2M)")
		asJSON := fs.Bool("json", false, "print {file, type, virtual_size, block_size, uuid} as JSON")
		parent := fs.StringP("parent", "b", "", "make a differencing image over this parent (--type differencing is then implied; qemu-img create's -b)")
		cf := addChainFlags(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 2 && !size.set && *typ != "differencing" && *parent == "" {
				// qemu-img create FILE SIZE.
				if err := size.Set(args[1]); err != nil {
					return usageErr("%v", err)
				}
				args = args[:1]
			}
			if err := wantArgs(args, "FILE"); err != nil {
				return err
			}
			if *parent != "" && !fs.Changed("type") {
				*typ = "differencing"
			}
			if *typ == "differencing" || *parent != "" {
				switch {
				case *parent == "":
					return usageErr("--type differencing needs --parent PARENT")
				case *typ != "differencing":
					return usageErr("--parent makes a differencing image, not a %s one: drop --type %s", *typ, *typ)
				case size.set:
					return usageErr("a differencing image has its parent's size: drop --size (grow the parent first with 'vhd resize')")
				}
				return createChild(e, *parent, args[0], bs.n, cf, *asJSON)
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
				return usageErr("--type %q: want fixed, dynamic or differencing", *typ)
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

// createChild makes a differencing image over parent.
func createChild(e *env, parent, file string, bs int64, cf *chainFlags, asJSON bool) error {
	c, err := chains.CreateChild(parent, file, chains.CreateOptions{BlockSize: bs, Open: cf.options(true)})
	if err != nil {
		return err
	}
	top := c.Top()
	id, size, bsize, depth := top.Footer().UUID, top.Size(), top.BlockSize(), c.Depth()
	if err := c.Close(); err != nil {
		return err
	}
	if asJSON {
		return writeJSON(e, map[string]any{"file": file, "type": "differencing", "virtual_size": size, "block_size": bsize, "uuid": id.String(), "parent": parent})
	}
	fmt.Fprintf(e.stdout, "created %s: differencing VHD over %s (a chain of %d layers), virtual size %s, block size %s, uuid %s\n", file, parent, depth, human(size), human(bsize), id)
	return nil
}
