package chains

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"vhdkit/engine"
)

// RebaseOptions control Rebase.
type RebaseOptions struct {
	// Open are the options every chain is opened with (parent folders,
	// depth, a modified parent accepted).
	Open Options
	// Progress, if set, is called with the bytes of the disk done so far
	// and the disk's size.
	Progress func(done, total int64)
}

// RebaseResult says what Rebase did.
type RebaseResult struct {
	// OldParent is where the child's parent was.
	OldParent string
	// Copied is how many bytes were copied into the child: what its old
	// parent's chain showed where the new one shows something else.
	Copied int64
}

// Rebase gives the differencing image child a new parent, newParent,
// keeping what child shows: where child holds nothing and the chain under
// newParent reads other data than the chain under its old parent, the old
// data is copied into child first. (SetParent only re-links; it is
// qemu-img rebase -u.)
//
// Child is opened for writing, so an image with differencing children of
// its own or an undo disk is refused (ErrHasChildren, ErrHasUndoDisk):
// writing it stamps its footer, and its children would no longer open.
//
// Order, and why a crash at any point leaves child showing the same data:
//  1. The differences are copied into child while it still links to its
//     old parent. Each sector copied holds what the old parent showed
//     there, so child reads the same before, during and after the copy.
//  2. Child is flushed: the copied data, then the bitmaps and BAT that
//     claim it, are durable (engine Flush) before anything names the new
//     parent.
//  3. The link is rewritten (relink, as SetParent does it, atomic: written past the end of
//     child and committed by its footer). After it child reads, where it
//     holds nothing, the new parent, which there equals the old one.
//
// A crash before 3 leaves child linked to its old parent with some
// sectors copied: the same view, and running Rebase again finishes the
// job (it finds fewer differences). A crash in 3 leaves the old link or
// the new one, each with the same view.
func Rebase(ctx context.Context, child, newParent string, opts RebaseOptions) (*RebaseResult, error) {
	ro := opts.Open
	ro.ReadOnly = true
	res, err := copyDifferences(ctx, child, newParent, opts)
	if err != nil {
		return nil, err
	}
	reachPoint("rebase-copied")
	if err := relink(child, newParent, ro); err != nil {
		return nil, err
	}
	return res, nil
}

// relink is step 3: child records newParent's UUID, timestamp, name and
// locators (engine SetParentLink: atomic). It is SetParent without the
// checks that the parent is the one recorded: it is another one.
func relink(child, newParent string, ro Options) error {
	img, err := engine.Open(child, engine.Options{Logger: ro.Logger})
	if err != nil {
		return err
	}
	defer img.Close()
	p, err := Open(newParent, ro)
	if err != nil {
		return err
	}
	defer p.Close()
	if p.Size() != img.Size() {
		return fmt.Errorf("%w: the new parent's disk is %d bytes, %s's is %d", ErrParentMismatch, p.Size(), child, img.Size())
	}
	locs, err := Locators(child, newParent)
	if err != nil {
		return err
	}
	pft := p.Top().Footer()
	return img.SetParentLink(engine.ParentInfo{UUID: pft.UUID, Timestamp: pft.Timestamp, Name: filepath.Base(newParent), Locators: locs})
}

// copyDifferences is steps 1 and 2 of Rebase: the child is flushed and
// closed, and so is the new parent, when it returns.
func copyDifferences(ctx context.Context, child, newParent string, opts RebaseOptions) (*RebaseResult, error) {
	ro := opts.Open
	ro.ReadOnly = true
	newView, err := Open(newParent, ro)
	if err != nil {
		return nil, err
	}
	defer newView.Close()
	if err := refuseOwnLayer(child, newView); err != nil {
		return nil, err
	}
	rw := opts.Open
	rw.ReadOnly = false
	c, err := Open(child, rw)
	if err != nil {
		return nil, err
	}
	res, err := copyOldView(ctx, c, newView, ro, opts.Progress)
	if cerr := c.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return res, err
}

// refuseOwnLayer refuses a new parent whose chain holds child: the chain
// would loop.
func refuseOwnLayer(child string, newView *Chain) error {
	st, err := os.Stat(child)
	if err != nil {
		return err
	}
	for _, l := range newView.Layers() {
		if lst, err := os.Stat(l.Path); err == nil && os.SameFile(st, lst) {
			return fmt.Errorf("%w: %s is in the new parent's chain (at %s); choose a parent that does not read from it", ErrCycle, child, l.Path)
		}
	}
	return nil
}

// copyOldView copies into c's top, where it holds nothing, the old
// parent's data wherever newView reads differently, and flushes it.
func copyOldView(ctx context.Context, c *Chain, newView *Chain, ro Options, progress func(done, total int64)) (*RebaseResult, error) {
	layers := c.Layers()
	top := layers[0].Image
	if top.Type() != engine.TypeDifferencing {
		return nil, fmt.Errorf("%s is a %s image, not a differencing one: it has no parent to replace", layers[0].Path, top.Type())
	}
	if newView.Size() != top.Size() {
		return nil, fmt.Errorf("%w: the new parent's disk is %d bytes, %s's is %d; resize one first", ErrParentMismatch, newView.Size(), layers[0].Path, top.Size())
	}
	oldView, err := Open(layers[1].Path, ro)
	if err != nil {
		return nil, err
	}
	defer oldView.Close()
	r := rebaser{top: top, old: oldView, new: newView, progress: progress, buf: make([]byte, rebaseChunk), newBuf: make([]byte, rebaseChunk)}
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	if err := top.Flush(); err != nil {
		return nil, err
	}
	return &RebaseResult{OldParent: layers[1].Path, Copied: r.copied}, nil
}
