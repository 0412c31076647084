package chains

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"vhdkit/engine"
)

// MergeOptions control Merge.
type MergeOptions struct {
	// Into is the ancestor to merge into; the child's parent if empty.
	Into string
	// Force merges although other children of the target depend on it:
	// they are left in place, invalid (their parent changed under
	// them). It never lets a merge delete a layer another image still
	// needs, nor pass over an undo disk (see merge_plan.go).
	Force bool
	// Open are the options the chain is opened with.
	Open Options
	// Progress, if set, is called with bytes copied and bytes to copy.
	Progress func(done, total int64)
}

// MergeResult says what a merge did.
type MergeResult struct {
	Target  string   `json:"target"`
	Removed []string `json:"removed"`
	// Relinked are the children of the merged child now linked to the
	// target.
	Relinked []string `json:"relinked"`
	Copied   int64    `json:"bytes_copied"`
}

// Merge copies the data of child, and of every layer between it and the
// target ancestor, into the target, moves the children of child onto the
// target, then deletes those layers: the target then holds what the child
// showed, and every other image reads as before. Images that would not
// (see merge_plan.go) make it refuse with ErrHasChildren before anything
// is written.
//
// Crash safety, in this order:
//
//  1. every file the merge writes is opened and locked (the target, the
//     children to move), so one in use stops it before step 2;
//  2. the journal beside the child, then the mark beside the target, are
//     made durable (merge_journal.go); from here Open refuses every layer
//     involved with ErrMergeInterrupted, and running Merge again resumes;
//  3. the sectors the merged layers hold are copied into the target and
//     it is flushed. Those layers still shadow them, so the child, and
//     the children of the child, read exactly as before throughout;
//  4. each child of the child is re-linked to the target (an atomic,
//     synced metadata change), recording the target's timestamp as it
//     stands after the flush. Linked to the child or to the target, it
//     reads the same, so a crash between two re-links is harmless. This
//     comes after 3 (the target must hold the data first) and before 5
//     (the old parent must exist until the new link is durable);
//  5. the merged layers are deleted, child first; then the mark, then
//     the journal, each folder synced.
//
// Running Merge again after a crash redoes 3 and 4 (both idempotent: the
// same data, the same links, with the timestamp of this run's flush) if
// the child is still there; if the child is gone, deletions had begun, so
// 3 and 4 had finished: it redoes 4 anyway and finishes 5.
func Merge(ctx context.Context, child string, opts MergeOptions) (*MergeResult, error) {
	if j, err := readJournal(child); err == nil {
		return resumeMerge(ctx, child, j, opts)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ro := opts.Open
	ro.ReadOnly = true
	c, err := Open(child, ro)
	if err != nil {
		return nil, err
	}
	k, err := targetIndex(c, opts.Into)
	if err != nil {
		c.Close()
		return nil, err
	}
	if c.layers[k].Image.IsRaw() {
		c.Close()
		return nil, fmt.Errorf("%s is a raw disk image (the parent of a Xen blktap child): vhd merges only into VHDs; write the chain into one new image with 'vhd merge --to NEW --type dynamic %s'", c.layers[k].Path, child)
	}
	j := &mergeJournal{Target: c.layers[k].Path, TargetUUID: c.layers[k].Image.Footer().UUID.String()}
	for _, l := range c.layers[:k] {
		j.Remove = append(j.Remove, l.Path)
	}
	// The target's undo disk blocks even a forced merge (see guard.go).
	if err := refuseUndoDisk(j.Target, c.layers[k].Image.Footer().UUID, j.Remove, forMerge); err != nil {
		c.Close()
		return nil, err
	}
	if j.Relink, err = planMerge(c, k, opts); err != nil {
		c.Close()
		return nil, err
	}
	return finishMerge(ctx, c, k, j, false, opts)
}

// openMergeTarget opens the merge target for writing, and openRelinked a
// child to move onto it. Tests replace them to run those files on files
// that simulate power loss.
var (
	openMergeTarget = openWritable
	openRelinked    = openWritable
)

// targetIndex finds the layer to merge into.
func targetIndex(c *Chain, into string) (int, error) {
	if len(c.layers) < 2 {
		return 0, fmt.Errorf("%s is not a differencing image: nothing to merge", c.layers[0].Path)
	}
	if into == "" {
		return 1, nil
	}
	want, err := idOf(into)
	if err != nil {
		return 0, err
	}
	for i, l := range c.layers[1:] {
		if id, err := idOf(l.Path); err == nil && id == want {
			return i + 1, nil
		}
	}
	return 0, fmt.Errorf("%s is not an ancestor of %s", into, c.layers[0].Path)
}

// finishMerge runs steps 1 to 5 of Merge (the journal already exists when
// resuming). Once the journal exists, every error says the merge is
// unfinished and how to finish it.
func finishMerge(ctx context.Context, c *Chain, k int, j *mergeJournal, journaled bool, opts MergeOptions) (*MergeResult, error) {
	defer c.Close()
	child := c.layers[0].Path
	res := &MergeResult{Target: j.Target, Removed: j.Remove, Relinked: j.Relink}
	unfinished := func(err error) (*MergeResult, error) {
		if !journaled {
			return nil, err
		}
		return nil, mergeStopped(child, j.Target, err)
	}
	rw, kids, err := lockMergeFiles(c, k, j.Relink, journaled, opts.Open.Logger)
	if err != nil {
		return unfinished(err)
	}
	defer closeAll(kids)
	c.layers[k].Image = rw
	c.wire()
	if err := growTarget(c, k); err != nil {
		return unfinished(err)
	}
	if !journaled {
		if err := writeJournal(child, j); err != nil {
			return nil, err
		}
		journaled = true // from here on, a failure leaves a merge to finish
	}
	if err := writeMark(j.Target, child); err != nil {
		return unfinished(err)
	}
	n, err := copyShadowed(ctx, c, k, opts.Progress)
	res.Copied = n
	if err != nil {
		return unfinished(err)
	}
	if err := rw.Flush(); err != nil {
		return unfinished(err)
	}
	if err := relinkAll(kids, j.Target, rw.Footer()); err != nil {
		return unfinished(err)
	}
	if err := removeMerged(child, j); err != nil {
		return unfinished(err)
	}
	unfreeze(j.Target)
	return res, nil
}

// growTarget grows the merge target, layer k of c, when it is smaller
// than the child merged into it (Xen's vhd-util resize grows a leaf over
// its parent), so that the child's data past the target's end has
// somewhere to go. Nothing anyone reads may change meanwhile: past its
// end the target showed zeros, and once grown it shows there what its
// own parent holds, so a target whose parent holds data past the
// target's end is refused, before anything is written. Otherwise the
// grown part reads zeros still, and children smaller than the target
// show its first bytes as before, so the growth (a relocation, atomic)
// may come before the journal; a resumed merge finds it done.
func growTarget(c *Chain, k int) error {
	target, size := c.layers[k].Image, c.Size()
	old := target.Size()
	if old >= size {
		return nil
	}
	if k+1 < len(c.layers) {
		under := below{c.layers[k+1:]}
		if end := min(size, under.Size()); end > old {
			ext, err := under.Extents(old, end-old)
			if err != nil {
				return err
			}
			for _, e := range ext {
				if e.State == engine.ExtentData {
					return fmt.Errorf("%s is %d bytes, %s it would be merged into %d, and growing %s would show what its parent %s holds past %d bytes (at %d); it cannot be merged there", c.layers[0].Path, size, c.layers[k].Path, old, c.layers[k].Path, c.layers[k+1].Path, old, e.Off)
				}
			}
		}
	}
	if err := target.Grow(size); err != nil {
		return fmt.Errorf("grow the merge target %s to the child's %d bytes: %w", c.layers[k].Path, size, err)
	}
	return nil
}

// mergeStopped is the error of a merge that stopped after its journal was
// written: the target is half-written, and only running the merge again
// makes the chain usable.
func mergeStopped(child, target string, err error) error {
	if errors.Is(err, engine.ErrLocked) {
		// Not stopped: another process holds the files, most likely the
		// merge that wrote the journal, still running, or a server whose
		// live merge it is. Running this again would not finish it.
		return fmt.Errorf("%s is being merged into %s, or its files are held, and cannot be touched now: %w", child, target, err)
	}
	return &MergeStoppedError{Child: child, Target: target, Err: err}
}

// lockMergeFiles opens the target for writing (the chain holds it
// read-only) and each child to re-link, all with exclusive locks. A
// child to re-link that is gone is skipped when resuming: it was deleted
// after an interruption, and nothing depends on it any more.
func lockMergeFiles(c *Chain, k int, relink []string, resuming bool, log *slog.Logger) (*engine.Image, []relinked, error) {
	target := c.layers[k]
	if err := target.Image.Close(); err != nil {
		return nil, nil, err
	}
	rw, err := openMergeTarget(target.Path, engine.Options{Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("open merge target %s for writing: %w", target.Path, err)
	}
	var kids []relinked
	for _, p := range relink {
		img, err := openRelinked(p, engine.Options{Logger: log})
		if resuming && errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			rw.Close()
			closeAll(kids)
			return nil, nil, fmt.Errorf("open %s to move it onto %s: %w", p, target.Path, err)
		}
		kids = append(kids, relinked{p, img})
	}
	return rw, kids, nil
}

// unfreeze gives the merge target's owner back the write permission a
// snapshot took: it now holds the merged data and is meant to be written
// again. Best effort: the merge is done either way.
func unfreeze(path string) {
	if st, err := os.Stat(path); err == nil {
		os.Chmod(path, st.Mode().Perm()|0o200)
	}
}

// copyShadowed copies every range some layer above k holds into layer k,
// reading it through the chain (so each sector comes from its topmost
// holder).
func copyShadowed(ctx context.Context, c *Chain, k int, progress func(done, total int64)) (int64, error) {
	size := c.Size()
	upper := upperView{c, k}
	total := int64(0)
	const step = 64 << 20
	for off := int64(0); off < size; off += step {
		ext, err := upper.Extents(off, min(step, size-off))
		if err != nil {
			return 0, err
		}
		for _, e := range ext {
			if e.State == engine.ExtentData {
				total += e.Len
			}
		}
	}
	buf := make([]byte, 4<<20)
	target := c.layers[k].Image
	var done int64
	for off := int64(0); off < size; off += step {
		ext, err := upper.Extents(off, min(step, size-off))
		if err != nil {
			return done, err
		}
		for _, e := range ext {
			if e.State != engine.ExtentData {
				continue
			}
			for p := e.Off; p < e.Off+e.Len; {
				if err := ctx.Err(); err != nil {
					return done, err
				}
				n := min(int64(len(buf)), e.Off+e.Len-p)
				if _, err := c.layers[0].Image.ReadAt(buf[:n], p); err != nil {
					return done, err
				}
				if _, err := target.WriteAt(buf[:n], p); err != nil {
					return done, err
				}
				p += n
				done += n
				if progress != nil {
					progress(done, total)
				}
			}
		}
	}
	return done, nil
}

// upperView merges the extents of the layers above k.
type upperView struct {
	c *Chain
	k int
}

func (u upperView) Extents(off, n int64) ([]engine.Extent, error) {
	return below{u.c.layers[:u.k]}.Extents(off, n)
}

// removeMerged deletes the merged layers, child first, syncing their
// folders, then the mark and the journal.
func removeMerged(child string, j *mergeJournal) error {
	for _, p := range j.Remove {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := syncDir(filepath.Dir(p)); err != nil {
			return err
		}
		reachPoint("remove:layer")
	}
	return removeMergeFiles(child, j.Target)
}

// resumeMerge finishes a merge a crash or an interruption stopped.
func resumeMerge(ctx context.Context, child string, j *mergeJournal, opts MergeOptions) (*MergeResult, error) {
	if _, err := os.Stat(child); errors.Is(err, os.ErrNotExist) || j.Copied {
		return finishDeletions(child, j)
	}
	c, err := openMidMerge(child, opts.Open)
	if err != nil {
		return nil, mergeStopped(child, j.Target, err)
	}
	k, err := targetIndex(c, j.Target)
	if err != nil {
		c.Close()
		return nil, mergeStopped(child, j.Target, err)
	}
	if got := c.layers[k].Image.Footer().UUID.String(); got != j.TargetUUID {
		c.Close()
		return nil, fmt.Errorf("merge journal %s names target %s with UUID %s, the file has %s: not resuming; restore the target or move the journal away", journalPath(child), j.Target, j.TargetUUID, got)
	}
	return finishMerge(ctx, c, k, j, true, opts)
}

// finishDeletions ends a merge whose child is already deleted, or whose
// journal says the copy was done (a live merge): the target was durable
// before either. The re-links are redone all the same (idempotent), then
// the rest deleted.
func finishDeletions(child string, j *mergeJournal) (*MergeResult, error) {
	res := &MergeResult{Target: j.Target, Removed: j.Remove, Relinked: j.Relink}
	img, err := engine.Open(j.Target, engine.Options{ReadOnly: true})
	if err != nil {
		return nil, mergeStopped(child, j.Target, err)
	}
	ft := img.Footer()
	img.Close()
	var kids []relinked
	for _, p := range j.Relink {
		k, err := openRelinked(p, engine.Options{})
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			closeAll(kids)
			return nil, mergeStopped(child, j.Target, err)
		}
		kids = append(kids, relinked{p, k})
	}
	err = relinkAll(kids, j.Target, ft)
	closeAll(kids)
	if err == nil {
		err = removeMerged(child, j)
	}
	if err != nil {
		return nil, mergeStopped(child, j.Target, err)
	}
	unfreeze(j.Target)
	return res, nil
}

// openMidMerge opens the chain of a merge's child as the merge left it:
// the journal and mark are the merge's own, and the target's timestamp
// changed under the child (harmlessly: the child still shadows every
// sector copied).
func openMidMerge(child string, opts Options) (*Chain, error) {
	opts.ReadOnly = true
	opts.AcceptModifiedParent = true
	opts.ignoreMerges = true
	return Open(child, opts)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
