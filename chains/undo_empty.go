package chains

import (
	"vhdkit/engine"
)

// An undo disk that holds no changes is worth nothing and costs much: it
// makes the image look changed, and resize, compact and writes to the
// image are refused while it exists. So a chain that made its undo disk
// (OpenUndo created it, or a live undo commit or discard made a fresh
// one) deletes it when it closes it holding nothing. One OpenUndo found
// is treated so only if it is empty at open and no image depends on it
// (adoptEmpty): one left by a crash before the delete, or by an older
// vhd. One that holds changes is never deleted this way.
//
// "Holds nothing" is sector-exact: no sector of the undo disk is marked
// written in its block bitmaps (Changes), so an allocated block whose
// bitmap is all clear holds nothing either. The file is unlinked while
// the chain still holds it open and locked, so no other process can have
// opened it in between; the folder is synced, then the image closed. A
// crash anywhere in between leaves either the empty undo disk, which
// loses nothing and a later mount reuses, or none.

// Changes measures what an undo disk (any differencing layer) holds over
// its parent: the bytes its bitmaps mark written, which is what a commit
// copies into the image, and the blocks holding them.
type Changes struct {
	Written int64 `json:"written_bytes"`
	Blocks  int64 `json:"blocks"`
}

// layerChanges measures img's changes from its extents.
func layerChanges(img *engine.Image) (Changes, error) {
	var ch Changes
	size, bs := img.Size(), img.BlockSize()
	if bs <= 0 {
		bs = max(size, 1) // not sparse: one block, as far as counting goes
	}
	lastBlock := int64(-1)
	const step = 64 << 20
	for off := int64(0); off < size; off += step {
		ext, err := img.Extents(off, min(step, size-off))
		if err != nil {
			return Changes{}, err
		}
		for _, e := range ext {
			if e.State == engine.ExtentHole {
				continue
			}
			ch.Written += e.Len
			first, last := e.Off/bs, (e.Off+e.Len-1)/bs
			if first == lastBlock {
				first++
			}
			if last >= first {
				ch.Blocks += last - first + 1
			}
			lastBlock = last
		}
	}
	return ch, nil
}

// adoptEmpty says whether the undo disk OpenUndo found, now c's top and
// held locked by it, holds nothing and has no differencing image made
// over it: then deleting it at close, if still empty, loses nothing. Any
// doubt (a failed scan) keeps it.
func adoptEmpty(c *Chain) bool {
	top := c.layers[0]
	if top.Image.ReadOnly() {
		return false
	}
	if ch, err := layerChanges(top.Image); err != nil || ch.Written > 0 {
		return false
	}
	deps, err := Dependents(top.Image.Footer().UUID, top.Path, []string{top.Path}, nil)
	return err == nil && len(deps) == 0
}

// UndoRemoved says whether Close deleted the chain's undo disk because
// it held no changes.
func (c *Chain) UndoRemoved() bool {
	c.gate.RLock()
	defer c.gate.RUnlock()
	return c.undoRemoved
}

// removeEmptyUndo deletes the undo disk before Close closes it, if this
// chain made it, alone holds it and it holds nothing (see above). It
// says whether it did; a failure to tell or to delete keeps the file.
func (c *Chain) removeEmptyUndo() bool {
	if !c.undoMade || c.undoOf == "" || len(c.layers) < 2 {
		return false
	}
	top := c.layers[0]
	if top.Path != UndoPath(c.undoOf) || top.Image.ReadOnly() || (top.ref != nil && top.ref.Load() > 1) {
		return false
	}
	if mergeUnderway(top.Path) != nil {
		return false // a stopped commit's journal names it: leave it to that merge
	}
	ch, err := layerChanges(top.Image)
	if err != nil || ch.Written > 0 {
		return false
	}
	return removeFile(top.Path) == nil
}
