package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/nbdclient"
)

var convertCmd = &command{
	name:    "convert",
	args:    "--to raw|fixed|dynamic [flags] SRC DST",
	summary: "copy a disk into a new raw image, fixed VHD or dynamic VHD",
	doc: `SRC is a VHD (fixed, dynamic, or differencing with its chain of
parents; detected by its footer cookie), a raw disk image, or a block
device such as a physical disk (opened read-only). A SRC in another
image format (qcow2, VHDX, VMDK, VDI...) or compressed (gzip, xz, zip,
tar/OVA...) is refused, saying how to convert or unpack it; --from raw
copies its bytes anyway. A raw disk with an MBR, a GPT or an ISO 9660
volume is a raw disk: it needs no flag.

SRC may also be an NBD export, named by its URI as qemu-img and nbdcopy
take it: nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, or
nbds:// and nbds+unix:// for TLS (--tls-ca, --tls-cert, --tls-key,
--tls-server-name, or ?tls-certificates=DIR as libnbd reads it). The
export is the disk's bytes, as raw; what its server's base:allocation
says are holes and zeros is not read.

Only SRC's data is copied: its holes, unallocated blocks and runs of
zeros are skipped, so a raw DST is sparse and a dynamic DST allocates no
block that would hold only zeros. A VHD's size is rounded up to a whole
512-byte sector; --align rounds it further (Azure wants fixed VHDs of a
whole number of MiB: --align 1M), and the output says so.

DST is written as a temporary file next to it (.DST.tmp-*), synced, and
renamed into place, so DST never names a half-written image; on an error
or an interrupt (Ctrl-C) the temporary file is removed. An existing DST
is refused unless --force (and never replaced if it is a device, or in
use by another vhd process).

--salvage copies what a damaged VHD still holds, where every other
command (and qemu-img) refuses it: a dynamic or differencing image cut
short (a download or copy that did not finish) or whose block table
puts blocks over each other. Each layer is opened read-only; a block
cut by the end of the file keeps the sectors before the cut; a block
past the end, over a structure, over another block (both are dropped:
which holds the data cannot be told), or whose table entry is zero
reads as never written (zeros, or the parent's data in a
differencing layer). The output lists the disk ranges lost, layer by
layer (--json: "lost" and "lost_bytes"). SRC is never changed. A sound
parent a locator leads to is taken before a damaged copy. Exit status 3
when something was lost (the copy is made), 1 when nothing can be
salvaged (the header, the table's place or the footers damaged).

--onto-device restores onto a block device instead (with --to raw): DST
must be a block device at least as large as SRC, not mounted or claimed
by another program (it is opened exclusively). Its first SRC-size bytes
are overwritten in place, holes and zeros included; nothing past them
is touched. There is no temporary copy: an interrupted restore leaves
the device partly written, and says so.

` + sizeHelp + "\n\n" + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		to := fs.StringP("to", "O", "", "output format: raw, fixed or dynamic (required; qemu's vpc is dynamic)")
		from := fs.StringP("from", "f", "auto", "input format: auto (a VHD if it has a VHD footer, refused if another image format or compressed, else raw), vhd (or qemu's vpc) or raw (any file's bytes as they are)")
		var bs blockSizeFlag
		var align sizeFlag
		fs.Var(&bs, "block-size", "block size of a dynamic DST (default 2M)")
		fs.Var(&align, "align", "round DST's size up to a whole multiple of SIZE, e.g. 1M")
		force := fs.Bool("force", false, "replace DST if it exists")
		salvage := fs.Bool("salvage", false, "copy what a damaged VHD SRC still holds (blocks cut off or over each other read as never written) and list what was lost")
		onto := fs.Bool("onto-device", false, "DST is a block device to restore onto, in place (with --to raw): its contents up to SRC's size are overwritten")
		noProgress := fs.Bool("no-progress", false, "never show a progress bar")
		asJSON := fs.Bool("json", false, "print {source, source_type, source_size, destination, format, virtual_size, data_written, zeros_skipped, replaced} as JSON")
		cf := addChainFlags(fs)
		cf.addForceShare(fs)
		cf.addNBDSource(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "SRC", "DST"); err != nil {
				return err
			}
			if err := cf.tlsFor(args[0]); err != nil {
				return err
			}
			if *to == "vpc" || *to == "vhd" {
				*to = "dynamic" // qemu-img -O vpc: dynamic unless -o subformat=fixed
			}
			opts := engine.ConvertOptions{To: engine.Format(*to), BlockSize: bs.n, Align: align.n, Force: *force, OpenVHD: chainOpener(cf)}
			switch *to {
			case "raw", "fixed", "dynamic":
			case "":
				return usageErr("--to is required: raw, fixed or dynamic")
			default:
				return usageErr("--to %q: want raw, fixed or dynamic", *to)
			}
			switch *from {
			case "auto":
			case "raw", "vhd":
				opts.From = engine.Format(*from)
			case "vpc":
				opts.From = engine.FormatVHD
			default:
				return usageErr("--from %q: want auto, vhd or raw", *from)
			}
			if nbdclient.IsURI(args[0]) {
				if opts.From != "" && opts.From != engine.FormatRaw {
					return usageErr("--from %s: an NBD export is a disk's bytes, read as raw; leave --from out", *from)
				}
				opts.OpenSource = func(uri string) (engine.Disk, string, error) {
					d, err := nbdclient.OpenDisk(ctx, uri, cf.tls)
					if err != nil {
						return nil, "", err
					}
					return d, "NBD export", nil
				}
			}
			var salvaged *chains.Chain
			if *salvage {
				if nbdclient.IsURI(args[0]) || opts.From == engine.FormatRaw {
					return usageErr("--salvage reads a damaged VHD; SRC %s is read as raw bytes, which need no salvage", args[0])
				}
				if isVHD, err := engine.IsVHD(args[0]); err != nil {
					return err
				} else if !isVHD {
					return fmt.Errorf("%s: --salvage: nothing of a VHD is left in it (no footer, no dynamic header): there is nothing to salvage; a raw disk converts without --salvage", args[0])
				}
				opts.OpenVHD = salvageOpener(cf, &salvaged)
			}
			if bs.set && *to != "dynamic" {
				return usageErr("--block-size applies only to --to dynamic")
			}
			if align.set && (align.n <= 0 || *to != "raw" && align.n%engine.SectorSize != 0) {
				return usageErr("--align %d: want a positive whole number of 512-byte sectors, e.g. 1M", align.n)
			}
			bar := maybeBar(e, *noProgress)
			if bar != nil {
				opts.Progress = bar.update
			}
			if *force && !sameExistingFile(args[0], args[1]) {
				// Replacing an image others depend on would orphan them.
				// SRC == DST is refused by engine.Convert, and that is
				// what to say first: nothing would be replaced.
				if err := chains.RefuseReplace(args[1], cf.options(true).ParentDirs); err != nil {
					return err
				}
			}
			if *onto {
				err := restoreOntoDevice(ctx, e, args[0], args[1], opts, bar, *asJSON, &salvaged)
				return salvageOutcome(err, *salvage, salvaged)
			}
			res, err := engine.Convert(ctx, args[0], args[1], opts)
			if bar != nil {
				bar.finish()
			}
			if errors.Is(err, engine.ErrDestinationExists) && !*force && isRegular(args[1]) {
				return fmt.Errorf("%w, or --force to replace it", err)
			}
			if err != nil {
				return salvageOutcome(err, *salvage, salvaged)
			}
			if *asJSON {
				out := map[string]any{
					"source": args[0], "source_type": res.Source, "source_size": res.SrcSize,
					"destination": args[1], "format": *to, "virtual_size": res.Size,
					"data_written": res.Stats.Written, "zeros_skipped": res.Stats.Zeroed, "replaced": res.Replaced,
				}
				if salvaged != nil {
					out["lost"], out["lost_bytes"] = lostJSON(salvaged), lostBytes(salvaged)
				}
				if err := writeJSON(e, out); err != nil {
					return err
				}
				return salvageOutcome(nil, *salvage, salvaged)
			}
			fmt.Fprintf(e.stdout, "converted %s (%s, %s) to %s (%s, %s)\n", args[0], res.Source, human(res.SrcSize), args[1], kind(*to), human(res.Size))
			if res.Size != res.SrcSize {
				why := "a whole number of 512-byte sectors"
				if align.set {
					why = fmt.Sprintf("a whole multiple of %s (--align)", human(align.n))
				}
				fmt.Fprintf(e.stdout, "size rounded up by %d bytes, from %d to %d bytes, to be %s; the added bytes read as zeros\n", res.Size-res.SrcSize, res.SrcSize, res.Size, why)
			}
			fmt.Fprintf(e.stdout, "wrote %s of data; skipped %s of holes and zeros\n", human(res.Stats.Written), human(res.Stats.Zeroed))
			if res.Replaced {
				fmt.Fprintf(e.stdout, "replaced the previous %s\n", args[1])
			}
			if salvaged != nil {
				printLost(e, salvaged, args[1])
			}
			return salvageOutcome(nil, *salvage, salvaged)
		}
	},
}

// sameExistingFile reports whether a and b are one existing file
// (device and inode).
func sameExistingFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

func kind(to string) string {
	if to == "raw" {
		return "raw image"
	}
	return to + " VHD"
}

// isRegular reports whether path is a regular file (what --force may
// replace; a folder or device never is).
func isRegular(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}
