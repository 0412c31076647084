package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"vhdkit/engine"
	"vhdkit/nbdclient"
)

var measureCmd = &command{
	name:    "measure",
	args:    "[--to fixed|dynamic] [flags] SIZE | --image IMAGE",
	summary: "say how large a VHD made from a disk (convert, flatten) or of a size would be",
	doc: `Prints the length of the file 'vhd convert --to fixed|dynamic' would
write, without writing it, as qemu-img measure does:
  required size         for IMAGE: a dynamic VHD holding a block for
                        each block IMAGE stores data in; for SIZE: an
                        empty one
  fully allocated size  a dynamic VHD with every block allocated
For --to fixed both are the disk's size and a footer. IMAGE is a VHD
(a differencing image with its chain of parents: what a flatten makes),
a raw image, a block device or an NBD export named by its URI; with
--image the size is IMAGE's. Sizes
are rounded up to a whole sector (and --align), as convert rounds them.

The required size counts blocks IMAGE stores data in (from its extent
map, without reading it): convert skips blocks that hold only zeros, so
the file it writes can be smaller, never larger. The lengths include the
holes vhd leaves to align blocks' data in the file (they take no space
on disk: 'vhd info' says how much space an image really holds).
--json prints {format, virtual_size, block_size, required,
fully_allocated} (qemu-img's "fully-allocated" is fully_allocated).

` + sizeHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		to := fs.StringP("to", "O", "dynamic", "the VHD to measure: fixed or dynamic (qemu's vpc is dynamic)")
		image := fs.String("image", "", "measure a VHD made from IMAGE (qemu-img measure takes it as its argument: so does vhd when it names a file)")
		var size, align sizeFlag
		var bs blockSizeFlag
		fs.Var(&size, "size", "measure an empty disk of SIZE (the same as the SIZE argument)")
		fs.Var(&bs, "block-size", "block size of the dynamic VHD (default 2M)")
		fs.Var(&align, "align", "round the size up to a whole multiple of SIZE, as convert --align")
		format := fs.StringP("format", "f", "auto", "how IMAGE is read: auto, vhd (qemu's vpc) or raw")
		asJSON := fs.Bool("json", false, "print the sizes as JSON")
		output := fs.String("output", "human", "human or json (qemu-img's spelling of --json)")
		cf := addChainFlags(fs)
		cf.addForceShare(fs)
		cf.addNBDSource(fs)
		return func(ctx context.Context, e *env, args []string) error {
			m := measurement{blockSize: bs.n, align: align.n}
			if err := m.parseTarget(*to, bs.set, align); err != nil {
				return err
			}
			if err := parseOutput(*output, asJSON); err != nil {
				return err
			}
			src, err := measureSource(args, *image, size)
			if err != nil {
				return err
			}
			from, err := parseFormat("--format", *format)
			if err != nil {
				return err
			}
			if src.image != "" {
				err = m.ofImage(ctx, src.image, from, cf)
			} else {
				err = m.ofSize(src.size)
			}
			if err != nil {
				return err
			}
			return m.print(e, *asJSON)
		}
	},
}

// parseOutput reads qemu-img's --output=human|json into asJSON.
func parseOutput(output string, asJSON *bool) error {
	switch output {
	case "json":
		*asJSON = true
	case "human":
	default:
		return usageErr("--output %q: want human or json", output)
	}
	return nil
}

// measured is what vhd measure measures: an image, or an empty disk.
type measured struct {
	image string
	size  int64
}

// measureSource reads SIZE | --size SIZE | --image IMAGE | IMAGE (qemu's
// spelling: a positional argument that names a file).
func measureSource(args []string, image string, size sizeFlag) (measured, error) {
	given := len(args)
	if image != "" {
		given++
	}
	if size.set {
		given++
	}
	switch {
	case given == 0:
		return measured{}, usageErr("missing SIZE, or --image IMAGE")
	case given > 1:
		return measured{}, usageErr("give one of SIZE, --size SIZE or --image IMAGE")
	case image != "":
		return measured{image: image}, nil
	case size.set:
		return measured{size: size.n}, nil
	}
	if st, err := os.Stat(args[0]); err == nil && !st.IsDir() || nbdclient.IsURI(args[0]) {
		return measured{image: args[0]}, nil // qemu-img measure takes the image so too
	}
	n, err := parseSize(args[0])
	if err != nil {
		return measured{}, usageErr("%q is neither a size nor a file; %v", args[0], err)
	}
	return measured{size: n}, nil
}

// measurement is the VHD measured and its result.
type measurement struct {
	to        engine.Format
	blockSize int64
	align     int64
	size      int64 // the VHD's disk size
	required  int64
	full      int64
}

func (m *measurement) parseTarget(to string, bsSet bool, align sizeFlag) error {
	switch to {
	case "fixed":
		m.to = engine.FormatFixed
	case "dynamic", "vpc":
		m.to = engine.FormatDynamic
	default:
		return usageErr("--to %q: want fixed or dynamic", to)
	}
	if bsSet && m.to != engine.FormatDynamic {
		return usageErr("--block-size applies only to --to dynamic")
	}
	if align.set && (align.n <= 0 || align.n%engine.SectorSize != 0) {
		return usageErr("--align %d: want a positive whole number of 512-byte sectors, e.g. 1M", align.n)
	}
	if m.blockSize == 0 {
		m.blockSize = engine.DefaultBlockSize
	}
	return nil
}

// diskSize is the size convert gives a VHD of a disk of n bytes.
func (m *measurement) diskSize(n int64) (int64, error) {
	n = (n + engine.SectorSize - 1) / engine.SectorSize * engine.SectorSize
	if m.align > 0 {
		n = (n + m.align - 1) / m.align * m.align
	}
	return n, engine.ValidateSize(n)
}

func (m *measurement) ofSize(n int64) error {
	return m.measure(n, 0)
}

// measure fills in the sizes for a disk of n bytes whose data lies in
// blocks of the VHD's blocks.
func (m *measurement) measure(n, blocks int64) error {
	size, err := m.diskSize(n)
	if err != nil {
		return err
	}
	m.size = size
	if m.to == engine.FormatFixed {
		m.required = engine.FixedFileSize(size)
		m.full = m.required
		return nil
	}
	if m.required, err = engine.DynamicFileSize(size, m.blockSize, blocks); err != nil {
		return err
	}
	m.full, err = engine.DynamicFileSize(size, m.blockSize, (size+m.blockSize-1)/m.blockSize)
	return err
}

// ofImage measures the VHD convert would make of path: it counts the
// blocks (of the VHD's block size) that the disk's data extents touch.
func (m *measurement) ofImage(ctx context.Context, path string, from sourceFormat, cf *chainFlags) error {
	if err := cf.tlsFor(path); err != nil {
		return err
	}
	d, _, err := openView(ctx, path, from, cf)
	if err != nil {
		return err
	}
	defer d.Close()
	var blocks int64
	last := int64(-1) // the last block counted: extents come in order
	for w := int64(0); w < d.Size(); w += scanWindow {
		if err := ctx.Err(); err != nil {
			return err
		}
		exts, err := d.Extents(w, min(scanWindow, d.Size()-w))
		if err != nil {
			return err
		}
		for _, x := range exts {
			if x.State != engine.ExtentData {
				continue
			}
			first, end := max(x.Off/m.blockSize, last+1), (x.Off+x.Len-1)/m.blockSize
			if end >= first {
				blocks += end - first + 1
				last = end
			}
		}
	}
	return m.measure(d.Size(), blocks)
}

func (m *measurement) print(e *env, asJSON bool) error {
	if asJSON {
		bs := m.blockSize
		if m.to == engine.FormatFixed {
			bs = 0
		}
		return writeJSON(e, map[string]any{
			"format": string(m.to), "virtual_size": m.size, "block_size": bs,
			"required": m.required, "fully_allocated": m.full,
		})
	}
	fmt.Fprintf(e.stdout, "required size: %d\nfully allocated size: %d\n", m.required, m.full)
	return nil
}
