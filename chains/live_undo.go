package chains

import (
	"context"
	"fmt"
	"os"
)

// UndoCommit folds the live chain's undo disk into its image while the
// disk is used (a live Merge of the top), and continues on a fresh, empty
// undo disk: writes from then on can again be committed or discarded.
// Crash safety is Merge's; the fresh undo disk is made beside the old one
// before the final gate and replaces it inside the gate, after the
// merge's journal is gone (finishUndo).
func (c *Chain) UndoCommit(ctx context.Context, progress func(done, total int64)) (*MergeResult, error) {
	c.live.Lock()
	defer c.live.Unlock()
	if err := c.undoLive(); err != nil {
		return nil, err
	}
	if err := refuseUnfinished(c.Layers(), 0); err != nil {
		return nil, err
	}
	return c.mergeTop(ctx, progress, &freshUndo{path: c.Layers()[0].Path})
}

// freshUndo is the empty undo disk a live undo commit continues on.
type freshUndo struct {
	path string // the undo disk's path, which it takes over
	tmp  string // where prepare made it
}

// prepare makes the fresh undo disk whole under a temporary name, over
// the image (the merge target, open for writing) as the copy left it.
// The image is stamped first (Image.Stamp), so that the timestamp the
// fresh undo disk records stays until the image is frozen in the gate.
func (u *freshUndo) prepare(image Layer) error {
	if err := image.Image.Stamp(); err != nil {
		return err
	}
	tmp, err := createAside(image, u.path)
	if err != nil {
		return fmt.Errorf("make the fresh undo disk: %w", err)
	}
	u.tmp = tmp
	return nil
}

// abandon removes the fresh undo disk of a commit that stopped (a no-op
// on a nil one, or once it is in place).
func (u *freshUndo) abandon() {
	if u != nil && u.tmp != "" {
		os.Remove(u.tmp)
	}
}

// finishUndo ends a live undo commit under the gate, after the image is
// durable and the journal says so. The image is frozen first: from here
// nothing writes it, so should a later step fail, the chain serves it
// read-only rather than let writes meant for an undo disk land in it.
// Then the old undo disk's file, the mark and the journal go (each
// synced: a crash from here leaves the image alone, whole), then the
// fresh undo disk is renamed into place. Nothing reaches it before the
// journal is gone, so a resumed merge never deletes a write.
func (c *Chain) finishUndo(u *freshUndo, image Layer) (Layer, error) {
	if err := image.Image.Freeze(); err != nil {
		return Layer{}, err
	}
	if err := removeFile(u.path); err != nil {
		return Layer{}, err
	}
	reachPoint("undo:removed")
	if err := removeMergeFiles(u.path, image.Path); err != nil {
		return Layer{}, err
	}
	img, err := installChild(u.tmp, u.path)
	if err != nil {
		return Layer{}, err
	}
	if err := relinkIfRestamped(img, u.path, image); err != nil {
		img.Close()
		return Layer{}, err
	}
	reachPoint("undo:installed")
	c.undoMade = true
	return c.newLayer(img, u.path), nil
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
		c.undoMade = true
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
	if layers := c.Layers(); len(layers) < 2 || layers[0].Path != UndoPath(c.undoOf) {
		return fmt.Errorf("%s is served without its undo disk (an undo commit stopped after merging it): stop serving it, run 'vhd merge %s' if it says the merge is unfinished, and serve it again", c.undoOf, UndoPath(c.undoOf))
	}
	return nil
}
