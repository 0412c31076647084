package backup

import (
	"cmp"
	"slices"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/nbdserve"
)

// ChangedView is a backup's disk when an earlier point is known: the
// read-only chain from the point down (chains.Chain.View), which also
// lists the extents written since the earlier point. Those are what the
// layers from the point's top down to the marker cut after the earlier
// point hold: every write since then landed in one of them, and nothing
// else did (layers are only cut on top and merged downward, and a merge
// of the marker into its parent would have removed the marker).
type ChangedView struct {
	*chains.Chain
	// changed are the view's top layers, top first, that hold the
	// changes; frozen, so their extents do not change while served.
	changed []*engine.Image
}

var (
	_ nbdserve.ChangeLister = (*ChangedView)(nil)
	_ engine.Disk           = (*ChangedView)(nil)
)

// NewChangedView wraps view (a chain from the point down) whose top n
// layers hold the changes since the earlier point. It owns view: closing
// it closes view.
func NewChangedView(view *chains.Chain, n int) *ChangedView {
	v := &ChangedView{Chain: view}
	for _, l := range view.Layers()[:n] {
		v.changed = append(v.changed, l.Image)
	}
	return v
}

// ChangedExtents implements nbdserve.ChangeLister: what the changed
// layers hold in [off, off+n), each run with the state of the topmost
// layer that holds it.
func (v *ChangedView) ChangedExtents(off, n int64) ([]engine.Extent, error) {
	var out []engine.Extent
	for _, img := range v.changed {
		ext, err := img.Extents(off, n)
		if err != nil {
			return nil, err
		}
		for _, e := range ext {
			if e.State != engine.ExtentHole {
				out = addUnder(out, e)
			}
		}
	}
	return joinRuns(out), nil
}

// addUnder adds the parts of e that no run of list covers (list is
// sorted and its runs disjoint; it stays so).
func addUnder(list []engine.Extent, e engine.Extent) []engine.Extent {
	pos, end := e.Off, e.Off+e.Len
	var add []engine.Extent
	for _, r := range list {
		if r.Off+r.Len <= pos || r.Off >= end {
			continue
		}
		if r.Off > pos {
			add = append(add, engine.Extent{Off: pos, Len: r.Off - pos, State: e.State})
		}
		pos = max(pos, r.Off+r.Len)
	}
	if pos < end {
		add = append(add, engine.Extent{Off: pos, Len: end - pos, State: e.State})
	}
	list = append(list, add...)
	slices.SortFunc(list, func(a, b engine.Extent) int { return cmp.Compare(a.Off, b.Off) })
	return list
}

// joinRuns merges neighbouring runs of the same state.
func joinRuns(list []engine.Extent) []engine.Extent {
	out := list[:0]
	for _, e := range list {
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == e.Off && out[k-1].State == e.State {
			out[k-1].Len += e.Len
			continue
		}
		out = append(out, e)
	}
	return out
}
