package chains

import (
	"context"
	"fmt"

	"vhdkit/engine"
)

// A live commit: the top is folded into its parent while it is written.
//
// Writes and the copy meet through a dirty map (dirty.go) and copyMu.
// Every range the top holds is marked; the copier takes marks and copies
// those ranges from the top into the target, holding copyMu exclusively
// for each piece, while each write, zero and trim holds it shared and
// marks its range after it lands. So a write either lands before the
// piece is copied (and is copied) or after (and is marked again, to be
// copied by a later pass): the target never keeps an older version of a
// range than the top. While the copy runs, zeros and trims keep the
// range allocated in the top (Chain.Zero, Chain.Trim): a range the top
// dropped would show the target again, which may already hold data the
// copier put there. Passes repeat until one copies little, then the last
// one runs under the gate, with no write in flight.
//
// Crash safety, in this order:
//
//  1. the journal (beside the top) and the mark (beside the target) are
//     durable before the target is opened for writing;
//  2. the copy writes only ranges the top holds, so the top shadows all
//     of it and the chain reads the same throughout; a crash here leaves
//     a merge `vhd merge TOP` redoes from the top's durable data, which
//     holds every flushed write;
//  3. the target is flushed outside the gate, so that the flush in it
//     syncs the last pass alone (the pause);
//  4. under the gate: the last pass, then the target is flushed and the
//     journal rewritten with Copied set, durably, before the swap. From
//     the swap on, writes go to the target, and a resumed merge must not
//     copy the top again over them: Copied makes it only delete;
//  5. after the swap, the top's file, the mark and the journal go.
//
// undo, for an undo commit, is the fresh undo disk the chain continues
// on: made whole beside the old one after the copy passes, before the
// gate (a full disk stops the commit there, the old undo disk still
// serving), and put in place inside the same gate instead of step 5, so
// that no write ever reaches the target (finishUndo).
func (c *Chain) mergeTop(ctx context.Context, progress func(done, total int64), undo *freshUndo) (*MergeResult, error) {
	layers := c.Layers()
	top, target := layers[0], layers[1]
	j, err := c.planLive(layers, 0)
	if err != nil {
		return nil, err
	}
	if err := startJournal(top.Path, j); err != nil {
		return nil, err
	}
	reachPoint("merge:journaled")
	rw, err := c.reopenWritable(1)
	if err != nil {
		abandonUnstarted(top.Path, j)
		return nil, err
	}
	reachPoint("merge:reopened")
	d := newDirtyMap(c.size)
	c.exclusive(func() error { c.dirty.Store(d); return nil })
	_, err = c.copyWhileWritten(ctx, d, top.Image, rw, progress)
	if err == nil {
		// What the passes copied is synced outside the gate: the flush
		// inside it then syncs only the last pass (the pause).
		err = rw.Flush()
	}
	if err == nil && undo != nil {
		err = undo.prepare(Layer{Image: rw, Path: target.Path})
	}
	// The result says what the top holds, as Status and an offline merge
	// measure it: what the copy passes did (64 KiB granules, copied again
	// when written again) is only their work. It is measured before the
	// gate, to keep the pause short: writes landing in the last pass are
	// merged but not counted.
	var merged Changes
	if err == nil {
		merged, err = layerChanges(top.Image)
	}
	if err == nil {
		err = c.exclusive(func() error { return c.switchToTarget(d, top, rw, j, undo) })
	}
	if err != nil {
		c.exclusive(func() error { c.dirty.Store(nil); return nil })
		undo.abandon()
		return nil, mergeStopped(top.Path, j.Target, err)
	}
	res := &MergeResult{Target: j.Target, Removed: j.Remove, Copied: merged.Written}
	if undo != nil {
		return res, nil
	}
	unfreeze(target.Path)
	if err := removeMerged(top.Path, j); err != nil {
		return nil, mergeStopped(top.Path, j.Target, err)
	}
	return res, nil
}

// Copy passes repeat while they copy more than convergeBytes (or until
// maxPasses), so the last one, under the gate, is short.
const (
	convergeBytes = 4 << 20
	maxPasses     = 16
	copyPiece     = 1 << 20
)

// copyWhileWritten copies every range of src (the top) into dst (the
// target) in passes, beside the chain's traffic (see above).
func (c *Chain) copyWhileWritten(ctx context.Context, d *dirtyMap, src, dst *engine.Image, progress func(done, total int64)) (int64, error) {
	total, err := markHeld(src, d)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, copyPiece)
	var done int64
	for pass := 0; pass < maxPasses; pass++ {
		n, err := d.take(func(off, n int64) error {
			for p := off; p < off+n; p += copyPiece {
				if err := ctx.Err(); err != nil {
					return err
				}
				l := min(copyPiece, off+n-p)
				c.copyMu.Lock()
				err := copyLayerRange(src, dst, p, l, buf)
				c.copyMu.Unlock()
				if err != nil {
					return err
				}
				reachPoint("merge:copy")
				done += l
				if progress != nil {
					progress(done, max(total, done))
				}
			}
			return nil
		})
		if err != nil {
			return done, err
		}
		if n <= convergeBytes {
			break
		}
	}
	return done, nil
}

// switchToTarget ends a live commit, under the gate: the last pass, the
// target durable, the journal marked copied, then the layers swapped and
// the top closed. Until the journal says Copied, a failure leaves the
// chain serving the top, which still shadows everything.
func (c *Chain) switchToTarget(d *dirtyMap, top Layer, rw *engine.Image, j *mergeJournal, undo *freshUndo) error {
	reachPoint("merge:gate")
	buf := make([]byte, copyPiece)
	if _, err := d.take(func(off, n int64) error { return copyLayerRange(top.Image, rw, off, n, buf) }); err != nil {
		return err
	}

	reachPoint("merge:last-pass")
	if err := rw.Flush(); err != nil {
		return err
	}
	reachPoint("merge:flushed")
	j.Copied = true
	if err := writeJournal(top.Path, j); err != nil {
		return keepServingTop(top, j, err)
	}
	reachPoint("merge:copied")
	c.dirty.Store(nil)
	c.byID[top.id] = rw // the top's cached runs read the same bytes from the target
	c.layers = without(c.layers, 0)
	top.Image.CloseUnflushed() // all of it is in the target, durable
	reachPoint("merge:swapped")
	if undo == nil {
		return nil
	}
	next, err := c.finishUndo(undo, c.layers[0])
	if err != nil {
		return err
	}
	c.layers = append([]Layer{next}, c.layers...)
	c.wireParents(1)
	return nil
}

// keepServingTop handles a failed write of the Copied journal: its
// rename may have happened without its folder sync, so the journal on
// disk may say Copied, and a resumed merge would then delete the top,
// with every write it took after. The journal is written again without
// Copied; if that fails too, nothing is known of it, and the top is
// closed (flushed), so no write is acknowledged that a resume could
// lose: the chain fails every request until the server is stopped and
// `vhd merge TOP` finishes the merge.
func keepServingTop(top Layer, j *mergeJournal, err error) error {
	j.Copied = false
	if rerr := writeJournal(top.Path, j); rerr == nil {
		return err
	}
	top.Image.Close()
	return fmt.Errorf("%w; the merge journal could not be written either, so %s was closed to keep every acknowledged write: stop the server and run `vhd merge %s`", err, top.Path, top.Path)
}
