package chains

import (
	"context"

	"vhdkit/engine"
)

// mergeMiddle folds layers[i], a frozen layer in the middle of the live
// chain (after a snapshot, the previous top), into its parent, and
// re-links the layer above onto that parent. Nothing writes either of
// them meanwhile, so the copy is one pass beside the traffic; the gate
// is taken to open the parent for writing and, at the end, to re-link
// the layer above and swap.
//
// Crash safety follows the offline merge (merge.go): the journal and mark
// are durable first; the merged layer shadows every sector copied, so the
// chain reads the same throughout; the target is flushed (and frozen
// again) and the journal marked Copied before any re-link; each re-link
// is atomic and leaves its child reading the same (over the merged layer
// or over the target that now holds it); the merged layer is deleted
// last. A crash at any point leaves a merge `vhd merge LAYER` finishes.
func (c *Chain) mergeMiddle(ctx context.Context, i int, progress func(done, total int64)) (*MergeResult, error) {
	layers := c.Layers()
	merged, target := layers[i], layers[i+1]
	j, err := c.planLive(layers, i)
	if err != nil {
		return nil, err
	}
	if err := startJournal(merged.Path, j); err != nil {
		return nil, err
	}
	reachPoint("middle:journaled")
	rw, err := c.reopenWritable(i + 1)
	if err != nil {
		abandonUnstarted(merged.Path, j)
		return nil, err
	}
	stopped := func(err error) (*MergeResult, error) { return nil, mergeStopped(merged.Path, j.Target, err) }
	copied, err := copyFrozen(ctx, merged.Image, rw, progress)
	if err != nil {
		return stopped(err)
	}
	// Frozen again, the target's footer (the timestamp its children
	// record) no longer changes.
	if err := rw.Freeze(); err != nil {
		return stopped(err)
	}
	reachPoint("middle:frozen")
	j.Copied = true
	if err := writeJournal(merged.Path, j); err != nil {
		return stopped(err)
	}
	reachPoint("middle:copied")
	above := layers[i-1].Path
	if err := relinkOthers(j, above, target.Path, rw.Footer()); err != nil {
		return stopped(err)
	}
	reachPoint("middle:relinked")
	if err := c.exclusive(func() error { return c.dropMerged(i, merged, rw, target.Path) }); err != nil {
		return stopped(err)
	}
	if err := removeMerged(merged.Path, j); err != nil {
		return stopped(err)
	}
	return &MergeResult{Target: j.Target, Removed: j.Remove, Relinked: j.Relink, Copied: copied}, nil
}

// copyFrozen copies everything src holds into dst, in pieces.
func copyFrozen(ctx context.Context, src, dst *engine.Image, progress func(done, total int64)) (int64, error) {
	d := newDirtyMap(src.Size())
	total, err := markHeld(src, d)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, copyPiece)
	var done int64
	_, err = d.take(func(off, n int64) error {
		for p := off; p < off+n; p += copyPiece {
			if err := ctx.Err(); err != nil {
				return err
			}
			l := min(copyPiece, off+n-p)
			if err := copyLayerRange(src, dst, p, l, buf); err != nil {
				return err
			}
			done += l
			reachPoint("middle:copy")
			if progress != nil {
				progress(done, total)
			}
		}
		return nil
	})
	return done, err
}

// relinkOthers moves the merged layer's children that are not in this
// chain (siblings of the layer above) onto the target.
func relinkOthers(j *mergeJournal, above, target string, ft engine.Footer) error {
	var kids []relinked
	defer func() { closeAll(kids) }()
	for _, p := range j.Relink {
		if sameFile(p, above) {
			continue
		}
		img, err := openRelinked(p, engine.Options{})
		if err != nil {
			return err
		}
		kids = append(kids, relinked{p, img})
	}
	return relinkAll(kids, target, ft)
}

// dropMerged, under the gate, re-links the layer above the merged one
// onto the target and takes the merged layer out of the chain. The top
// is re-linked in place (it is open for writing); a frozen layer is
// reopened for writing for the re-link and frozen again.
func (c *Chain) dropMerged(i int, merged Layer, target *engine.Image, targetPath string) error {
	reachPoint("middle:gate")
	aboveImg, err := c.writableLayer(i - 1)
	if err != nil {
		return err
	}
	kid := []relinked{{c.layers[i-1].Path, aboveImg}}
	if err := relinkAll(kid, targetPath, target.Footer()); err != nil {
		return err
	}
	if i-1 > 0 {
		if err := aboveImg.Freeze(); err != nil {
			return err
		}
	}
	c.byID[merged.id] = target // its cached runs read the same bytes from the target
	c.layers = without(c.layers, i)
	c.wireParents(i)
	reachPoint("middle:swapped")
	return merged.Image.Close()
}

// writableLayer returns layer k's image open for writing: the top as it
// is, a frozen layer reopened (and swapped in). Under the gate.
func (c *Chain) writableLayer(k int) (*engine.Image, error) {
	if k == 0 {
		return c.layers[0].Image, nil
	}
	l := c.layers[k]
	if err := l.Image.Close(); err != nil {
		return nil, err
	}
	img, err := openWritable(l.Path, engine.Options{Logger: c.opts.Logger})
	if err != nil {
		back, berr := engine.Open(l.Path, engine.Options{ReadOnly: true, Logger: c.opts.Logger})
		if berr == nil {
			c.replaceImage(k, back)
		}
		return nil, err
	}
	c.replaceImage(k, img)
	return img, nil
}
