package main

import (
	"context"
	"fmt"

	"vhdkit/chains"
	"vhdkit/engine"
)

// restoreOntoDevice is convert --onto-device: SRC written onto the block
// device DST in place (engine.WriteOntoDevice).
// *salvaged is set, by opts' opener, to the chain a --salvage read: what
// it lost is said too.
func restoreOntoDevice(ctx context.Context, e *env, src, dev string, opts engine.ConvertOptions, bar *progressBar, asJSON bool, salvaged **chains.Chain) error {
	if opts.To != engine.FormatRaw {
		return usageErr("--onto-device writes the raw disk: use --to raw")
	}
	if opts.Align != 0 || opts.Force {
		return usageErr("--onto-device takes neither --align nor --force: the device's size is its own, and it is always written in place")
	}
	res, err := engine.WriteOntoDevice(ctx, src, dev, opts)
	bar.finish()
	if err != nil {
		return err
	}
	if asJSON {
		out := map[string]any{
			"source": src, "source_type": res.Source, "source_size": res.SrcSize,
			"destination": dev, "format": "device", "virtual_size": res.Size,
			"data_written": res.Stats.Written, "zeros_written": res.Stats.Zeroed, "replaced": true,
		}
		if *salvaged != nil {
			out["lost"], out["lost_bytes"] = lostJSON(*salvaged), lostBytes(*salvaged)
		}
		return writeJSON(e, out)
	}
	fmt.Fprintf(e.stdout, "restored %s (%s, %s) onto %s (%s)\n", src, res.Source, human(res.SrcSize), dev, human(res.Size))
	fmt.Fprintf(e.stdout, "wrote %s of data and %s of zeros; the device past %d bytes is untouched\n", human(res.Stats.Written), human(res.Stats.Zeroed), res.SrcSize)
	if *salvaged != nil {
		printLost(e, *salvaged, dev)
	}
	return nil
}
