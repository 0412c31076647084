package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/engine"
)

var compareCmd = &command{
	name:    "compare",
	args:    "[flags] A B",
	summary: "tell whether two disks hold the same data, as qemu-img compare does",
	doc: `A and B are each a VHD (fixed, dynamic, or differencing with its
chain of parents), a raw image, a block device or an NBD export (its
URI: nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, nbds://
with --tls-ca FILE or ?tls-certificates=DIR), in any mix: what is compared is the disk
each shows. Runs a disk does not store (holes,
unallocated blocks) read as zeros and are not read when the other disk
does not store them either, so sparse images compare fast.

The output and exit status are qemu-img compare's:
  0  "Images are identical."
  1  "Content mismatch at offset N!": N is the start of the first
     512-byte sector that differs
  2  an error (a file that cannot be opened or read), or a bad command line
Disks of different sizes are identical when the larger one reads as
zeros past the smaller one's end ("Warning: Image size mismatch!" is
printed first); with --strict a size difference is a mismatch. Unlike
qemu-img -s, --strict does not compare allocation: a VHD and a raw file
store data differently by design.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		fa := fs.StringP("format-a", "f", "auto", "how A is read: auto (VHD if it has a VHD footer, else raw), vhd (qemu's vpc) or raw")
		fb := fs.StringP("format-b", "F", "auto", "how B is read, as --format-a")
		strict := fs.BoolP("strict", "s", false, "a size difference is a mismatch (exit 1), even when the extra bytes are zeros")
		quiet := fs.BoolP("quiet", "q", false, "print nothing; only the exit status tells")
		noProgress := fs.Bool("no-progress", false, "never show a progress bar")
		cf := addChainFlags(fs)
		cf.addForceShare(fs)
		cf.addNBDSource(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "A", "B"); err != nil {
				return err
			}
			if err := cf.tlsFor(args...); err != nil {
				return err
			}
			fromA, err := parseFormat("--format-a", *fa)
			if err != nil {
				return err
			}
			fromB, err := parseFormat("--format-b", *fb)
			if err != nil {
				return err
			}
			c := comparison{e: e, quiet: *quiet, strict: *strict, bar: maybeBar(e, *noProgress || *quiet)}
			return c.compareDisks(ctx, args[0], args[1], fromA, fromB, cf)
		}
	},
}

// comparison is one run of vhd compare.
type comparison struct {
	e      *env
	quiet  bool
	strict bool
	bar    *progressBar
}

// compareDisks compares the two disks and ends with qemu-img compare's exit status.
func (c *comparison) compareDisks(ctx context.Context, pathA, pathB string, fromA, fromB sourceFormat, cf *chainFlags) error {
	a, _, err := openView(ctx, pathA, fromA, cf)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer a.Close()
	b, _, err := openView(ctx, pathB, fromB, cf)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer b.Close()
	if c.strict && a.Size() != b.Size() {
		c.say("Strict mode: Image size mismatch!")
		return exitStatus(1)
	}
	at, err := c.scanDisks(ctx, a, b)
	if err != nil {
		return c.fail(ctx, err)
	}
	if at >= 0 {
		c.say(fmt.Sprintf("Content mismatch at offset %d!", at))
		return exitStatus(1)
	}
	c.say("Images are identical.")
	return nil
}

// scanDisks returns the first differing sector, or -1: first over the common
// size, then past it, where the larger disk must read as zeros.
func (c *comparison) scanDisks(ctx context.Context, a, b engine.Disk) (int64, error) {
	common := min(a.Size(), b.Size())
	d := newDiffer(a, b, c.bar.update)
	d.total = max(a.Size(), b.Size())
	defer c.bar.finish()
	at, err := d.firstDiff(ctx, common)
	if at >= 0 || err != nil || a.Size() == b.Size() {
		return at, err
	}
	c.bar.finish()
	c.say("Warning: Image size mismatch!")
	larger := a
	if b.Size() > a.Size() {
		larger = b
	}
	return firstNonZeroByExtents(ctx, larger, common, larger.Size()-common, d)
}

// firstNonZeroByExtents is firstNonZero over only the runs the disk stores.
func firstNonZeroByExtents(ctx context.Context, disk engine.Disk, off, n int64, d *differ) (int64, error) {
	for end := off + n; off < end; off += scanWindow {
		exts, err := disk.Extents(off, min(scanWindow, end-off))
		if err != nil {
			return 0, err
		}
		for _, x := range exts {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			if x.State == engine.ExtentData {
				if at, err := firstNonZero(disk, d.bufA, x.Off, x.Len); at >= 0 || err != nil {
					return at, err
				}
			}
			d.step(x.Len)
		}
	}
	return -1, nil
}

func (c *comparison) say(s string) {
	if !c.quiet {
		fmt.Fprintln(c.e.stdout, s)
	}
}

// fail prints err as every command does, but ends with exit status 2:
// qemu-img compare's "error", which scripts tell from 1, "differ".
func (c *comparison) fail(ctx context.Context, err error) error {
	c.bar.finish()
	report(ctx, c.e, lookup("compare"), err)
	return exitStatus(2)
}
