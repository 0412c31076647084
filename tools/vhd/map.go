package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/engine"
)

var mapCmd = &command{
	name:    "map",
	args:    "[--json] [flags] IMAGE",
	summary: "show which runs of a disk hold data, zeros or nothing, and which layer holds them",
	doc: `Lists the disk IMAGE shows (a VHD with its chain of parents, a raw
image, or an NBD export named by its URI, as its server's
base:allocation describes it) as runs, adjacent runs of one kind in one layer merged:
  data   stored data, read from the layer named
  zero   space known to read as zeros that has a place in the file (a
         hole in a fixed VHD's or a raw file's host file)
  hole   no layer holds it: it reads as zeros
VHD extents are bitmap-precise: in a block partly written only the
sectors written are data.

--json (or qemu-img's --output=json) prints qemu-img map's shape, one
object per run: start, length, depth (0 the image named, 1 its parent...;
a hole has the depth of the last layer), present (a layer holds it),
zero (reads as zeros), data (stored data), offset (where the run starts
in its layer's file, when it has a place there) and file (that layer's
path, when present).

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		asJSON := fs.Bool("json", false, "print the runs as JSON, in qemu-img map's shape")
		output := fs.String("output", "human", "human or json (qemu-img's spelling of --json)")
		format := fs.StringP("format", "f", "auto", "how IMAGE is read: auto, vhd (qemu's vpc) or raw")
		cf := addChainFlags(fs)
		cf.addForceShare(fs)
		cf.addNBDSource(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "IMAGE"); err != nil {
				return err
			}
			if err := cf.tlsFor(args[0]); err != nil {
				return err
			}
			switch *output {
			case "json":
				*asJSON = true
			case "human":
			default:
				return usageErr("--output %q: want human or json", *output)
			}
			from, err := parseFormat("--format", *format)
			if err != nil {
				return err
			}
			d, chain, err := openView(ctx, args[0], from, cf)
			if err != nil {
				return err
			}
			defer d.Close()
			p := newMapPrinter(e, *asJSON)
			if err := walkMap(ctx, d, chain, args[0], p.add); err != nil {
				return err
			}
			p.finish()
			return nil
		}
	},
}

// mapEntry is one run of vhd map, in qemu-img map's JSON shape.
type mapEntry struct {
	Start   int64  `json:"start"`
	Length  int64  `json:"length"`
	Depth   int    `json:"depth"`
	Present bool   `json:"present"`
	Zero    bool   `json:"zero"`
	Data    bool   `json:"data"`
	Offset  *int64 `json:"offset,omitempty"`
	File    string `json:"file,omitempty"`
}

// follows reports whether n continues m: same kind, same layer, and, where
// both have a place in the file, the next bytes of it.
func (m *mapEntry) follows(n mapEntry) bool {
	if m.Start+m.Length != n.Start || m.Depth != n.Depth || m.Present != n.Present || m.Zero != n.Zero || m.Data != n.Data || m.File != n.File {
		return false
	}
	if (m.Offset == nil) != (n.Offset == nil) {
		return false
	}
	return m.Offset == nil || *m.Offset+m.Length == *n.Offset
}

// walkMap hands emit the disk's runs in order, window by window so the
// extent lists stay small, each split where its place in the file jumps
// (a dynamic image's blocks lie anywhere in the file).
func walkMap(ctx context.Context, d engine.Disk, chain *chains.Chain, path string, emit func(mapEntry)) error {
	layers := []string{path}
	var images []*engine.Image
	if chain != nil {
		layers = layers[:0]
		for _, l := range chain.Layers() {
			layers, images = append(layers, l.Path), append(images, l.Image)
		}
	}
	size := d.Size()
	for w := int64(0); w < size; w += scanWindow {
		if err := ctx.Err(); err != nil {
			return err
		}
		exts, err := layerExtents(d, chain, w, min(scanWindow, size-w))
		if err != nil {
			return err
		}
		for _, x := range exts {
			for _, m := range splitByPlace(x, layers, images) {
				emit(m)
			}
		}
	}
	return nil
}

// layerExtents is chain.LayerExtents, or a raw disk's extents as layer 0.
// A raw file's holes are its own zeros, with a place in the file, as a
// fixed VHD's are (and as qemu-img map shows them).
func layerExtents(d engine.Disk, chain *chains.Chain, off, n int64) ([]chains.LayerExtent, error) {
	if chain != nil {
		return chain.LayerExtents(off, n)
	}
	exts, err := d.Extents(off, n)
	var out []chains.LayerExtent
	for _, x := range exts {
		if x.State == engine.ExtentHole {
			x.State = engine.ExtentZero
		}
		out = append(out, chains.LayerExtent{Extent: x, Layer: 0})
	}
	return out, err
}

// splitByPlace turns a run into map entries: one per stretch whose bytes
// lie one after another in the layer's file. images is nil for a raw
// disk, whose bytes are where they are on the disk.
func splitByPlace(x chains.LayerExtent, layers []string, images []*engine.Image) []mapEntry {
	m := mapEntry{Start: x.Off, Length: x.Len, Depth: x.Layer, Present: x.State != engine.ExtentHole,
		Zero: x.State != engine.ExtentData, Data: x.State == engine.ExtentData}
	if x.Layer < 0 {
		m.Depth = len(layers) - 1
		return []mapEntry{m}
	}
	m.File = layers[x.Layer]
	if images == nil {
		m.Offset = &m.Start
		return []mapEntry{m}
	}
	img := images[x.Layer]
	step := img.BlockSize()
	if step == 0 {
		step = x.Len // fixed: one stretch
	}
	var out []mapEntry
	for off, end := x.Off, x.Off+x.Len; off < end; {
		l := min(end, (off/step+1)*step) - off
		piece := m
		piece.Start, piece.Length = off, l
		if pos, ok := img.FileOffset(off); ok {
			piece.Offset = &pos
		}
		if k := len(out); k > 0 && out[k-1].follows(piece) {
			out[k-1].Length += l
		} else {
			out = append(out, piece)
		}
		off += l
	}
	return out
}

// mapPrinter prints entries as they come, merging each with the one
// before when it continues it.
type mapPrinter struct {
	e       *env
	json    bool
	pending *mapEntry
	n       int
}

func newMapPrinter(e *env, asJSON bool) *mapPrinter {
	if !asJSON {
		fmt.Fprintf(e.stdout, "%-18s %-18s %-5s %-5s %-18s %s\n", "Offset", "Length", "State", "Depth", "Mapped to", "File")
	}
	return &mapPrinter{e: e, json: asJSON}
}

func (p *mapPrinter) add(m mapEntry) {
	if p.pending != nil && p.pending.follows(m) {
		p.pending.Length += m.Length
		return
	}
	p.flush()
	p.pending = &m
}

func (p *mapPrinter) flush() {
	m := p.pending
	if m == nil {
		return
	}
	p.pending = nil
	if p.json {
		sep := ",\n"
		if p.n == 0 {
			sep = "["
		}
		fmt.Fprintf(p.e.stdout, "%s%s", sep, jsonLine(m))
		p.n++
		return
	}
	state := "data"
	switch {
	case !m.Present:
		state = "hole"
	case m.Zero:
		state = "zero"
	}
	mapped, file := "-", "-"
	if m.Offset != nil {
		mapped = fmt.Sprintf("%#x", *m.Offset)
	}
	if m.File != "" {
		file = m.File
	}
	fmt.Fprintf(p.e.stdout, "%-18s %-18s %-5s %-5d %-18s %s\n", fmt.Sprintf("%#x", m.Start), fmt.Sprintf("%#x", m.Length), state, m.Depth, mapped, file)
}

func (p *mapPrinter) finish() {
	p.flush()
	if p.json {
		if p.n == 0 {
			fmt.Fprint(p.e.stdout, "[")
		}
		fmt.Fprintln(p.e.stdout, "]")
	}
}

// jsonLine is one entry as qemu-img map prints it: one object on a line.
func jsonLine(m *mapEntry) string {
	b, _ := json.Marshal(m) // a struct of numbers, bools and a string
	return string(b)
}
