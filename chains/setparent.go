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
	// AcceptModified links the child to a parent written after the child
	// was made (its footer and file times both differ from the time the
	// child recorded: linkTimeMatches, the rule Open uses). Only right
	// when the parent's data is known unchanged (a tool rewrote its
	// footer): otherwise the child's changes sit over different data.
	AcceptModified bool
	// Open are the options the parent's own chain is opened with.
	Open Options
}

// SetParent re-links the differencing image child to parent, after files
// moved: the parent must be a VHD with the recorded UUID (unless
// IgnoreUUID) and the time the child recorded (unless AcceptModified);
// the child then records the parent's footer timestamp as it is now. The
// child's locators are rewritten for the new place, atomically (see
// engine.Image.SetParentLink).
func SetParent(child, parent string, opts SetParentOptions) error {
	if sameFile(child, parent) {
		// Checked first: opening the file twice would report it in use.
		return fmt.Errorf("%s: an image cannot be its own parent; name as PARENT the image %s was made over", parent, child)
	}
	img, err := engine.Open(child, engine.Options{Logger: opts.Open.Logger})
	if err != nil {
		return err
	}
	defer img.Close()
	if img.Type() != engine.TypeDifferencing {
		return fmt.Errorf("%s is a %s image, not a differencing one: it has no parent", child, img.Type())
	}
	h := img.Header()
	pft, pm, release, err := parentFooter(parent, img.HasRawParent(), opts.Open)
	if err != nil {
		return err
	}
	defer release() // its lock keeps writers off it until the link is made
	if pft.UUID != h.ParentUUID && !opts.IgnoreUUID {
		return fmt.Errorf("%s: %w: its UUID is %s, %s records %s; use --ignore-uuid only if it holds the same data", parent, ErrParentMismatch, pft.UUID, child, h.ParentUUID)
	}
	// The time the child recorded is that of the parent it was made over;
	// another image (--ignore-uuid) has its own, so only a parent with
	// the recorded UUID is held to it.
	if pft.UUID == h.ParentUUID && !opts.AcceptModified && !linkTimeMatches(child, img, pm, parent) {
		return modifiedParentError(child, img, parent, pm)
	}
	locs, err := Locators(child, parent)
	if err != nil {
		return err
	}
	// The UUID names the parent and its footer or file time matched (or
	// the user accepted it modified); its footer time is recorded as it
	// is now, so the link holds by the footer from then on.
	return img.SetParentLink(engine.ParentInfo{UUID: pft.UUID, Timestamp: pft.Timestamp, Name: filepath.Base(parent), Locators: locs})
}

// parentFooter opens the parent to link to, with its chain (checking the
// chain as Open does), or as a raw disk image for a child whose parent is
// raw (blktap's vhd-util snapshot -m: no UUID, its file time as the
// timestamp), and returns its footer, its metadata as the link checks
// judge it (linkTimeMatches) and what closes it.
func parentFooter(parent string, raw bool, opts Options) (engine.Footer, metadata, func(), error) {
	if raw {
		f, err := openRegular(parent)
		if err != nil {
			return engine.Footer{}, nil, nil, err
		}
		img, err := engine.OpenRawParent(f, parent, engine.Options{ReadOnly: true, NoLock: opts.NoLock})
		if err != nil {
			return engine.Footer{}, nil, nil, err
		}
		ft := img.Footer()
		if st, err := f.Stat(); err == nil {
			ft.Timestamp = engine.TimestampOf(st.ModTime()) // what blktap records of a raw parent
		}
		return ft, img, func() { img.Close() }, nil
	}
	opts.ReadOnly = true
	p, err := Open(parent, opts)
	if err != nil {
		return engine.Footer{}, nil, nil, err
	}
	return p.Top().Footer(), p.Top(), func() { p.Close() }, nil
}
