package chains

import (
	"fmt"
	"path/filepath"

	"vhdkit/engine"
)

// SetParentOptions control SetParent.
type SetParentOptions struct {
	// IgnoreUUID links the child to a parent whose UUID differs from the
	// one recorded (the child then records the new one). Only right when
	// the parent is known to hold the same data, e.g. a copy made by a
	// tool that changed its UUID.
	IgnoreUUID bool
	// Open are the options the parent's own chain is opened with;
	// AcceptModifiedParent also lets a parent whose timestamp changed be
	// linked (the child then records the new timestamp).
	Open Options
}

// SetParent re-links the differencing image child to parent, after files
// moved: the parent must be a VHD of the child's size with the recorded
// UUID (unless IgnoreUUID) and timestamp (unless AcceptModifiedParent).
// The child's locators are rewritten for the new place, atomically (see
// engine.Image.SetParentLink).
func SetParent(child, parent string, opts SetParentOptions) error {
	img, err := engine.Open(child, engine.Options{Logger: opts.Open.Logger})
	if err != nil {
		return err
	}
	defer img.Close()
	if img.Type() != engine.TypeDifferencing {
		return fmt.Errorf("%s is a %s image, not a differencing one: it has no parent", child, img.Type())
	}
	popts := opts.Open
	popts.ReadOnly = true
	p, err := Open(parent, popts)
	if err != nil {
		return err
	}
	defer p.Close()
	h := img.Header()
	pft := p.Top().Footer()
	if pft.UUID != h.ParentUUID && !opts.IgnoreUUID {
		return fmt.Errorf("%s: %w: its UUID is %s, %s records %s; use --ignore-uuid only if it holds the same data", parent, ErrParentMismatch, pft.UUID, child, h.ParentUUID)
	}
	if p.Size() != img.Size() {
		return fmt.Errorf("%s: %w: %d bytes, the child is %d", parent, ErrParentMismatch, p.Size(), img.Size())
	}
	ts := h.ParentTimestamp
	link := Layer{Image: img, Path: child}
	if !timestampMatches(link, Layer{Image: p.Top(), Path: parent}) {
		if !opts.Open.AcceptModifiedParent && !opts.IgnoreUUID {
			return fmt.Errorf("%s: %w since %s was made, so its changes may sit over different data; only if you know the parent's data did not change (a tool rewrote its footer), link it anyway with --accept-modified-parent (the child then records the new time, and opens without a word)", parent, ErrParentModified, child)
		}
		ts = pft.Timestamp
	}
	if opts.IgnoreUUID {
		ts = pft.Timestamp
	}
	locs, err := Locators(child, parent)
	if err != nil {
		return err
	}
	return img.SetParentLink(engine.ParentInfo{UUID: pft.UUID, Timestamp: ts, Name: filepath.Base(parent), Locators: locs})
}
