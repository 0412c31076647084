package chains

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"vhdkit/engine"
)

// MergeOptions control Merge.
type MergeOptions struct {
	// Into is the ancestor to merge into; the child's parent if empty.
	Into string
	// Force merges although other images depend on the target (they
	// become invalid: their parent changes under them).
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
	Copied  int64    `json:"bytes_copied"`
}

// Merge copies the data of child, and of every layer between it and the
// target ancestor, into the target, then deletes those layers: the target
// then holds what the child showed.
//
// Crash safety: a journal beside the child names the target and the
// layers to delete; it is written (and synced) before the target is
// touched and removed last. The merge copies only sectors the child's
// layers hold, and those layers still shadow them in the target, so at
// every moment the child still reads exactly as before. The layers are
// deleted only after the target is flushed. Running Merge again after a
// crash redoes the copy (idempotent) or, if the child is already gone,
// finishes the deletions.
func Merge(ctx context.Context, child string, opts MergeOptions) (*MergeResult, error) {
	if j, err := readJournal(child); err == nil {
		return resumeMerge(ctx, child, j, opts)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ro := opts.Open
	ro.ReadOnly = true
	c, err := open(child, ro)
	if err != nil {
		return nil, err
	}
	k, err := targetIndex(c, opts.Into)
	if err != nil {
		c.Close()
		return nil, err
	}
	res := &MergeResult{Target: c.layers[k].Path}
	for _, l := range c.layers[:k] {
		res.Removed = append(res.Removed, l.Path)
	}
	// The target's undo disk blocks even a forced merge (see guard.go).
	if err := refuseUndoDisk(res.Target, c.layers[k].Image.Footer().UUID, res.Removed, forMerge); err != nil {
		c.Close()
		return nil, err
	}
	if !opts.Force {
		deps, err := Dependents(c.layers[k].Image.Footer().UUID, c.layers[k].Path, res.Removed, opts.Open.ParentDirs)
		if err != nil {
			c.Close()
			return nil, err
		}
		if len(deps) > 0 {
			c.Close()
			return nil, fmt.Errorf("%w: %s would be invalidated by merging into %s; merge or delete them first", ErrHasChildren, strings.Join(deps, ", "), res.Target)
		}
	}
	j := &mergeJournal{Target: res.Target, TargetUUID: c.layers[k].Image.Footer().UUID.String(), Remove: res.Removed}
	if err := writeJournal(child, j); err != nil {
		c.Close()
		return nil, err
	}
	return res, finishMerge(ctx, c, k, res, opts)
}

// openMergeTarget opens the merge target for writing. Tests replace it to
// run the target on a file that simulates power loss.
var openMergeTarget = engine.Open

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

// finishMerge reopens the target for writing, copies, flushes, deletes.
func finishMerge(ctx context.Context, c *Chain, k int, res *MergeResult, opts MergeOptions) error {
	defer c.Close()
	target := c.layers[k]
	if err := target.Image.Close(); err != nil {
		return err
	}
	rw, err := openMergeTarget(target.Path, engine.Options{Logger: opts.Open.Logger})
	if err != nil {
		return fmt.Errorf("open merge target %s for writing: %w", target.Path, err)
	}
	c.layers[k].Image = rw
	c.wire()
	n, err := copyShadowed(ctx, c, k, opts.Progress)
	res.Copied = n
	if err != nil {
		return err
	}
	// The target must be durable before any layer above it goes.
	if err := rw.Flush(); err != nil {
		return err
	}
	if err := removeMerged(c.layers[0].Path, res.Removed); err != nil {
		return err
	}
	unfreeze(target.Path)
	return nil
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
	sub := &Chain{layers: u.c.layers[:u.k]}
	return below{sub, 0}.Extents(off, n)
}

// removeMerged deletes the merged layers, syncs their folders, then
// removes the journal.
func removeMerged(child string, paths []string) error {
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := syncDir(filepath.Dir(p)); err != nil {
			return err
		}
	}
	if err := os.Remove(journalPath(child)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(child))
}

// resumeMerge finishes a merge a crash interrupted.
func resumeMerge(ctx context.Context, child string, j *mergeJournal, opts MergeOptions) (*MergeResult, error) {
	res := &MergeResult{Target: j.Target, Removed: j.Remove}
	if _, err := os.Stat(child); errors.Is(err, os.ErrNotExist) {
		// The target was durable before the first deletion.
		return res, removeMerged(child, j.Remove)
	}
	ro := opts.Open
	ro.ReadOnly = true
	ro.AcceptModifiedParent = true // the merge itself stamped the target
	c, err := open(child, ro)
	if err != nil {
		return nil, err
	}
	k, err := targetIndex(c, j.Target)
	if err != nil {
		c.Close()
		return nil, err
	}
	if got := c.layers[k].Image.Footer().UUID.String(); got != j.TargetUUID {
		c.Close()
		return nil, fmt.Errorf("merge journal names target %s with UUID %s, the file has %s: not resuming", j.Target, j.TargetUUID, got)
	}
	return res, finishMerge(ctx, c, k, res, opts)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
