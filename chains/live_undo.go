package chains

import (
	"context"
	"fmt"
)

// UndoCommit folds the live chain's undo disk into its image while the
// disk is used (a live Merge of the top), and continues on a fresh, empty
// undo disk: writes from then on can again be committed or discarded.
// Crash safety is Merge's; the fresh undo disk replaces the old one
// inside the final gate, after the merge's journal is gone (finishUndo).
func (c *Chain) UndoCommit(ctx context.Context, progress func(done, total int64)) (*MergeResult, error) {
	c.live.Lock()
	defer c.live.Unlock()
	if err := c.undoLive(); err != nil {
		return nil, err
	}
	if err := refuseUnfinished(c.Layers(), 0); err != nil {
		return nil, err
	}
	top := c.Layers()[0]
	return c.mergeTop(ctx, progress, func(image Layer) (Layer, error) {
		return c.finishUndo(top.Path, image)
	})
}

// finishUndo ends a live undo commit under the gate, after the image is
// durable and the journal says so: the old undo disk's file, then the
// mark and the journal go (each synced: a crash from here leaves the
// image alone, whole), then a fresh undo disk is made whole under a
// temporary name and renamed into place. Nothing reaches it before the
// journal is gone, so a resumed merge never deletes a write.
func (c *Chain) finishUndo(vud string, image Layer) (Layer, error) {
	if err := removeFile(vud); err != nil {
		return Layer{}, err
	}
	reachPoint("undo:removed")
	if err := removeMergeFiles(vud, image.Path); err != nil {
		return Layer{}, err
	}
	// Frozen first, so the timestamp the fresh undo disk records is final.
	if err := image.Image.Freeze(); err != nil {
		return Layer{}, err
	}
	tmp, err := createAside(image, vud)
	if err != nil {
		return Layer{}, err
	}
	img, err := installChild(tmp, vud)
	if err != nil {
		return Layer{}, err
	}
	reachPoint("undo:installed")
	return c.newLayer(img, vud), nil
}

// UndoDiscard drops what the live chain's undo disk holds: the disk reads
// as its image again, at once, for every reader, and writes go on to a
// fresh, empty undo disk. The fresh one is made whole beside the old one
// and renamed over it under the gate, so a crash leaves either undo disk,
// never none or half of one.
func (c *Chain) UndoDiscard() error {
	c.live.Lock()
	defer c.live.Unlock()
	if err := c.undoLive(); err != nil {
		return err
	}
	layers := c.Layers()
	if err := refuseUnfinished(layers, -1); err != nil {
		return err // the image holds part of the writes a commit began to copy
	}
	top, image := layers[0], layers[1]
	tmp, err := createAside(image, top.Path)
	if err != nil {
		return err
	}
	return c.exclusive(func() error {
		reachPoint("discard:gate")
		img, err := installChild(tmp, top.Path)
		if err != nil {
			return err
		}
		reachPoint("discard:installed")
		top.Image.CloseUnflushed() // its file is gone, replaced
		c.layers = append([]Layer{c.newLayer(img, top.Path)}, c.layers[1:]...)
		c.wireParents(1)
		// Every cached run of the old undo disk is wrong now.
		c.res = newResolver(c, c.opts.ReadCacheBytes)
		return nil
	})
}

// undoLive checks that the chain runs on an undo disk.
func (c *Chain) undoLive() error {
	if err := c.writableLive(); err != nil {
		return err
	}
	if c.undoOf == "" {
		return fmt.Errorf("%s has no undo disk in use: served without --undo", c.Layers()[0].Path)
	}
	return nil
}
