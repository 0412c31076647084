package chains

import (
	"cmp"
	"slices"

	"vhdkit/engine"
)

// LayerExtent is a run of the chain's disk with the layer that holds it.
type LayerExtent struct {
	engine.Extent
	// Layer is the index in Layers (0 the top) of the image that holds
	// the run (State ExtentData or ExtentZero), or -1 for a hole no
	// layer holds, which reads as zeros.
	Layer int
}

// LayerExtents describes [off, off+n) as Extents does, each run with the
// layer that answers reads of it (`vhd map`). Adjacent runs of one state
// and layer are merged. Like Extents, the list has at most n/512 runs:
// callers bound n.
func (c *Chain) LayerExtents(off, n int64) ([]LayerExtent, error) {
	if off < 0 || n < 0 || off > c.size || n > c.size-off {
		return nil, engine.ErrOutOfRange
	}
	c.gate.RLock()
	defer c.gate.RUnlock()
	var found []LayerExtent
	rest, err := walkLayers(c.layers, off, n, func(i int, e engine.Extent) {
		found = append(found, LayerExtent{Extent: e, Layer: i})
	})
	if err != nil {
		return nil, err
	}
	for _, p := range rest {
		found = append(found, LayerExtent{Extent: engine.Extent{Off: p.off, Len: p.n, State: engine.ExtentHole}, Layer: -1})
	}
	slices.SortFunc(found, func(a, b LayerExtent) int { return cmp.Compare(a.Off, b.Off) })
	var out []LayerExtent
	for _, e := range found {
		if k := len(out); k > 0 && out[k-1].Layer == e.Layer && out[k-1].State == e.State && out[k-1].Off+out[k-1].Len == e.Off {
			out[k-1].Len += e.Len
			continue
		}
		out = append(out, e)
	}
	return out, nil
}
