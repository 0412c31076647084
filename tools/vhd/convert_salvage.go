package main

import (
	"errors"
	"fmt"

	"vhdkit/chains"
	"vhdkit/engine"
)

// salvageOpener opens a VHD SRC as convert --salvage does: every layer
// with engine's salvage open (read-only; blocks past the end of the
// file or over other blocks read as never written), and keeps the chain
// in *opened so the convert can say what was lost.
func salvageOpener(cf *chainFlags, opened **chains.Chain) func(string) (engine.Disk, string, error) {
	return func(path string) (engine.Disk, string, error) {
		o := cf.options(true)
		o.Salvage = true
		c, err := chains.Open(path, o)
		if err != nil {
			return nil, "", err
		}
		*opened = c
		return c, describeChain(c), nil
	}
}

// maxLostLines bounds the lost ranges convert prints; --json lists
// every one.
const maxLostLines = 20

// printLost says what a salvage could not read, layer by layer, and how
// DST reads there.
func printLost(e *env, c *chains.Chain, dst string) {
	lost := c.Lost()
	if len(lost) == 0 {
		fmt.Fprintf(e.stdout, "salvage: every block was read; nothing is lost\n")
		return
	}
	for _, l := range lost {
		reads := "zeros"
		if img := layerImage(c, l.Layer); img != nil && img.Type() == engine.TypeDifferencing {
			reads = "what the layers below hold"
		}
		if l.Layer != c.Layers()[0].Path {
			reads += " where no layer above holds data"
		}
		fmt.Fprintf(e.stdout, "salvage: %s of %s could not be read; %s reads %s there:\n", human(l.Bytes), l.Layer, dst, reads)
		for i, r := range l.Ranges {
			if i == maxLostLines {
				fmt.Fprintf(e.stdout, "  and %d more range(s) (--json lists them all)\n", len(l.Ranges)-i)
				break
			}
			fmt.Fprintf(e.stdout, "  disk bytes %d to %d (%s): %s\n", r.Off, r.Off+r.Len, human(r.Len), r.Why)
		}
		if l.MoreBytes > 0 {
			fmt.Fprintf(e.stdout, "  and %s in more ranges than are listed\n", human(l.MoreBytes))
		}
	}
}

// lostJSON is convert --json's "lost": every range, with its layer.
func lostJSON(c *chains.Chain) []map[string]any {
	out := []map[string]any{}
	for _, l := range c.Lost() {
		for _, r := range l.Ranges {
			out = append(out, map[string]any{"layer": l.Layer, "offset": r.Off, "length": r.Len, "why": r.Why})
		}
	}
	return out
}

// lostBytes is the total a salvage could not read, every layer.
func lostBytes(c *chains.Chain) int64 {
	var n int64
	for _, l := range c.Lost() {
		n += l.Bytes
	}
	return n
}

func layerImage(c *chains.Chain, path string) *engine.Image {
	for _, l := range c.Layers() {
		if l.Path == path {
			return l.Image
		}
	}
	return nil
}

// salvageOutcome is convert's result under --salvage: exit status 3 when
// something could not be read (the copy is made, and what was lost
// listed), and for an image salvage cannot read either (its header, the
// place of its table or its footers damaged) an error that says so
// instead of offering check and repair.
func salvageOutcome(err error, salvage bool, c *chains.Chain) error {
	switch {
	case !salvage:
		return err
	case err != nil && errors.Is(err, engine.ErrCorrupt):
		return advised{fmt.Errorf("%w; it cannot be salvaged: salvage reads past blocks the table puts past the end of the file or over each other, not damage to the header, the table's place or the footers; restore the image from a backup", err)}
	case err != nil:
		return err
	case c != nil && lostBytes(c) > 0:
		return exitStatus(exitProblems)
	}
	return nil
}
