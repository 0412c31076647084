package chains

import (
	"context"
	"fmt"
	"slices"

	"vhdkit/engine"
)

// Merge folds a layer of the live chain into its parent while the chain
// is read and written: the top (layer "" or the top's path), after which
// the parent is served directly as the new top (a live commit), or a
// layer in the middle, after which the layer above it is re-linked onto
// the parent. The chain reads the same throughout; the merged layer's
// file is deleted. Both follow the journal protocol of the offline Merge
// (merge.go), so an interruption, a failure or a crash leaves a merge
// that `vhd merge LAYER` finishes, and every flushed write is kept.
func (c *Chain) Merge(ctx context.Context, layer string, progress func(done, total int64)) (*MergeResult, error) {
	c.live.Lock()
	defer c.live.Unlock()
	if err := c.writableLive(); err != nil {
		return nil, err
	}
	layers := c.Layers()
	i := 0
	if layer != "" {
		var err error
		if i, err = layerIndex(layers, layer); err != nil {
			return nil, err
		}
	}
	if i == len(layers)-1 {
		return nil, fmt.Errorf("%s is the base of the chain: it has no parent to merge into", layers[i].Path)
	}
	if err := refuseUnfinished(layers, i); err != nil {
		return nil, err
	}
	if i == 0 {
		return c.mergeTop(ctx, progress, nil)
	}
	return c.mergeMiddle(ctx, i, progress)
}

// planLive writes down what merging layers[i] into layers[i+1] does,
// after the checks the offline merge makes (merge_plan.go): the target's
// undo disk, other images that depend on either, and views of this chain
// that hold either.
func (c *Chain) planLive(layers []Layer, i int) (*mergeJournal, error) {
	merged, target := layers[i], layers[i+1]
	if merged.Image.Size() > target.Image.Size() {
		return nil, fmt.Errorf("%s is larger than %s, which it would be merged into: merge it with vhd merge, which grows the target first", merged.Path, target.Path)
	}
	for _, l := range []Layer{merged, target} {
		if err := sharedLayer(l); err != nil {
			return nil, err
		}
	}
	j := &mergeJournal{Target: target.Path, TargetUUID: target.Image.Footer().UUID.String(), Remove: []string{merged.Path}}
	if err := refuseUndoDisk(j.Target, target.Image.Footer().UUID, j.Remove, forMerge); err != nil {
		return nil, err
	}
	// This merge may be run again after it stopped (refuseUnfinished lets
	// nothing else through): the layer above still links to the merged
	// one, through the journal this merge left.
	opts := c.opts
	opts.ignoreMerges = true
	relink, err := planMerge(&Chain{layers: layers[i:]}, 1, MergeOptions{Open: opts})
	if err != nil {
		return nil, err
	}
	if i == 0 && len(relink) > 0 {
		return nil, fmt.Errorf("%s, the top, has children (%v): they were cut from a disk that has been written since; delete them first", merged.Path, relink)
	}
	if i > 0 && !containsFile(relink, layers[i-1].Path) {
		relink = append(relink, layers[i-1].Path) // found by the chain even if the folder scan did not look there
	}
	j.Relink = relink
	return j, nil
}

// startJournal makes the journal and the mark durable: from here a crash
// leaves a merge that `vhd merge` finishes.
func startJournal(merged string, j *mergeJournal) error {
	if err := writeJournal(merged, j); err != nil {
		return err
	}
	if err := writeMark(j.Target, merged); err != nil {
		return mergeStopped(merged, j.Target, err)
	}
	return nil
}

// abandonUnstarted removes the journal and mark of a merge that failed
// before it wrote anything into its target.
func abandonUnstarted(merged string, j *mergeJournal) {
	removeMergeFiles(merged, j.Target)
}

// copyLayerRange copies what src stores of [off, off+n) into dst: its
// data, and zeros where it holds allocated zeros. Where src holds
// nothing, dst is left as it is.
func copyLayerRange(src, dst *engine.Image, off, n int64, buf []byte) error {
	ext, err := src.Extents(off, n)
	if err != nil {
		return err
	}
	for _, e := range ext {
		switch e.State {
		case engine.ExtentZero:
			if err := dst.Zero(e.Off, e.Len, engine.ZeroMayDeallocate); err != nil {
				return err
			}
		case engine.ExtentData:
			for p := e.Off; p < e.Off+e.Len; {
				l := min(int64(len(buf)), e.Off+e.Len-p)
				if err := src.ReadStored(buf[:l], p); err != nil {
					return err
				}
				if _, err := dst.WriteAt(buf[:l], p); err != nil {
					return err
				}
				p += l
			}
		}
	}
	return nil
}

// markHeld marks, in d, every range img holds (data or allocated zeros).
func markHeld(img *engine.Image, d *dirtyMap) (int64, error) {
	var total int64
	size := img.Size()
	const step = 64 << 20
	for off := int64(0); off < size; off += step {
		ext, err := img.Extents(off, min(step, size-off))
		if err != nil {
			return 0, err
		}
		for _, e := range ext {
			if e.State != engine.ExtentHole {
				d.mark(e.Off, e.Len)
				total += e.Len
			}
		}
	}
	return total, nil
}

// without returns layers without layer i, in a new list.
func without(layers []Layer, i int) []Layer {
	return slices.Delete(slices.Clone(layers), i, i+1)
}
