package chains

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"

	"vhdkit/engine"
)

// The live layer: a served chain changes while it is read and written.
//
// Every request (ReadAt, WriteAt, Zero, Trim, Flush, Extents) holds the
// chain's gate shared. A live change (Snapshot, Merge, UndoCommit,
// UndoDiscard) prepares what it can beside the traffic, then takes the
// gate exclusively for its swap: new requests wait, those in flight
// finish, the change flushes what must be durable, replaces the layer
// list as a whole and releases the gate. The pause is the swap alone,
// never a copy.
//
// Layers have ids, not positions, in the read cache (resolve_cache.go):
// a snapshot adds a layer above without touching the cache, and a merge
// maps the merged layer's id to the layer it was merged into, which holds
// the same data, so cached runs stay valid across both.
//
// A layer below the top is frozen: nothing writes it. View cuts a
// read-only chain from such a layer down (the point a backup reads),
// sharing the open images: one process holds each file once, and the
// images close when the last chain holding them does. A live change
// refuses to rewrite or delete a layer a view holds.
//
// One live change runs at a time (Chain.live). Each is crash-safe on its
// own terms, argued where it is implemented: live_snapshot.go,
// live_merge.go, live_undo.go.

// ErrLayerInUse: a live change would rewrite or delete a layer that a
// read-only view of the chain (an export, a backup) still reads.
var ErrLayerInUse = errors.New("the layer is exported read-only")

// exclusive runs fn with the gate held exclusively: no request is in
// flight and none starts until fn returns.
func (c *Chain) exclusive(fn func() error) error {
	reachPoint("gate:wait")
	c.gate.Lock()
	defer c.gate.Unlock()
	defer reachPoint("gate:release")
	return fn()
}

// writableLive checks that the chain can change live.
func (c *Chain) writableLive() error {
	if c.readOnly {
		return fmt.Errorf("%s is open read-only: %w", c.layers[0].Path, engine.ErrReadOnly)
	}
	return nil
}

// refuseUnfinished refuses a live change while a merge of a layer of
// the chain has not finished (a cancelled or failed live merge leaves its
// journal and mark, and the chain serving as before): its target is
// half-written and its plan names the layers as they were, so a snapshot
// over the layer it deletes, a discard of the writes it copies, or
// another merge would leave it unable to finish right. Only running that
// merge again, layers[again] into the layer under it, is let through
// (again < 0: none).
func refuseUnfinished(layers []Layer, again int) error {
	for i, l := range layers {
		if again >= 0 && (i == again || i == again+1) && isMergeOf(layers, again) {
			continue
		}
		if err := mergeUnderway(l.Path); err != nil {
			return fmt.Errorf("a merge in this chain did not finish: %w; run that merge again (vhd ctl merge) before any other live change", err)
		}
	}
	return nil
}

// isMergeOf says whether the unfinished merge of layers[i], if any, is
// into layers[i+1].
func isMergeOf(layers []Layer, i int) bool {
	j, err := readJournal(layers[i].Path)
	return err == nil && i+1 < len(layers) && sameFile(j.Target, layers[i+1].Path)
}

// layerIndex finds the layer at path in layers (the same file, by
// inode, or the same path).
func layerIndex(layers []Layer, path string) (int, error) {
	want, err := idOf(path)
	for i, l := range layers {
		if l.Path == path {
			return i, nil
		}
		if got, gerr := idOf(l.Path); err == nil && gerr == nil && got == want {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%s is not a layer of the chain of %s", path, layers[0].Path)
}

// sharedLayer refuses a change to a layer a view holds.
func sharedLayer(l Layer) error {
	if l.ref != nil && l.ref.Load() > 1 {
		return fmt.Errorf("%s: %w (a read-only view of it is open, as for a backup): remove that export first", l.Path, ErrLayerInUse)
	}
	return nil
}

// View opens a read-only chain from the layer at path down: a frozen
// point of the live chain, for a backup or a read-only export. The top
// of a writable chain is refused (it still changes: cut a snapshot first
// and view the layer under it). The view shares the chain's open images;
// close it like any chain.
func (c *Chain) View(path string) (*Chain, error) {
	c.gate.Lock()
	defer c.gate.Unlock()
	i, err := layerIndex(c.layers, path)
	if err != nil {
		return nil, err
	}
	if i == 0 && !c.readOnly {
		return nil, fmt.Errorf("%s is the top of a writable chain and still changes: snapshot it first ('vhd ctl snapshot') and view the layer under the new top", path)
	}
	if err := refuseUnfinished(c.layers[i:], -1); err != nil {
		return nil, err // a half-merged target is no frozen point
	}
	v := &Chain{layers: slices.Clone(c.layers[i:]), opts: c.opts, readOnly: true, size: c.size}
	v.opts.ReadOnly = true
	v.byID = make([]*engine.Image, len(v.layers))
	for j := range v.layers {
		v.layers[j].ref.Add(1)
		v.layers[j].id = int32(j)
		v.byID[j] = v.layers[j].Image
	}
	// The images' parents were wired by c, to the same images: a view
	// never rewires them (c's requests read them concurrently).
	v.res = newResolver(v, v.opts.ReadCacheBytes)
	return v, nil
}

// reopenWritable swaps layer k's read-only image for one open for
// writing (a merge target), under the gate: the file's shared lock is
// dropped and an exclusive one taken, which fails, leaving the layer as
// it was, if another process reads the file. The layers above k are
// rewired to the new image.
func (c *Chain) reopenWritable(k int) (*engine.Image, error) {
	var rw *engine.Image
	err := c.exclusive(func() error {
		l := c.layers[k]
		if err := l.Image.Close(); err != nil {
			return err
		}
		img, err := openMergeTarget(l.Path, engine.Options{Logger: c.opts.Logger})
		if err != nil {
			back, berr := engine.Open(l.Path, engine.Options{ReadOnly: true, Logger: c.opts.Logger})
			if berr != nil {
				return fmt.Errorf("open %s for writing: %w; and reopening it read-only failed too: %v", l.Path, err, berr)
			}
			c.replaceImage(k, back)
			return fmt.Errorf("open %s for writing: %w", l.Path, err)
		}
		c.replaceImage(k, img)
		rw = img
		return nil
	})
	return rw, err
}

// replaceImage puts img in place of layer k's image (closed or about to
// be), in a new layer list, and wires img to its parent and the layers
// above to img. Under the gate. img, a new open, has no parent of its
// own yet: a differencing one without it cannot write part of a sector
// or read where it holds nothing.
func (c *Chain) replaceImage(k int, img *engine.Image) {
	old := c.layers[k].Image
	layers := slices.Clone(c.layers)
	layers[k].Image = img
	c.layers = layers
	for id, m := range c.byID {
		if m == old {
			c.byID[id] = img
		}
	}
	c.wireParents(k + 1)
}

// newLayer is a layer for an image that joins the chain live.
func (c *Chain) newLayer(img *engine.Image, path string) Layer {
	ref := new(atomic.Int32)
	ref.Store(1)
	id := int32(len(c.byID))
	c.byID = append(c.byID, img)
	return Layer{Image: img, Path: path, Found: "live", id: id, ref: ref}
}

// removeFile deletes a layer's file and syncs its folder.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}
