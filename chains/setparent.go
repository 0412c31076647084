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
	// Open are the options the parent's own chain is opened with.
	Open Options
}

// SetParent re-links the differencing image child to parent, after files
// moved or the parent's time changed: the parent must be a VHD with the
// recorded UUID (unless IgnoreUUID); the child then records the parent's
// footer timestamp as it is now. The child's locators are rewritten for
// the new place, atomically (see engine.Image.SetParentLink).
func SetParent(child, parent string, opts SetParentOptions) error {
	img, err := engine.Open(child, engine.Options{Logger: opts.Open.Logger})
	if err != nil {
		return err
	}
	defer img.Close()
	if img.Type() != engine.TypeDifferencing {
		return fmt.Errorf("%s is a %s image, not a differencing one: it has no parent", child, img.Type())
	}
	h := img.Header()
	pft, release, err := parentFooter(parent, img.HasRawParent(), opts.Open)
	if err != nil {
		return err
	}
	defer release() // its lock keeps writers off it until the link is made
	if pft.UUID != h.ParentUUID && !opts.IgnoreUUID {
		return fmt.Errorf("%s: %w: its UUID is %s, %s records %s; use --ignore-uuid only if it holds the same data", parent, ErrParentMismatch, pft.UUID, child, h.ParentUUID)
	}
	locs, err := Locators(child, parent)
	if err != nil {
		return err
	}
	// The UUID names the parent; its time is recorded as it is now, so
	// a parent whose footer or file time changed (a tool rewrote its
	// footer, Xen's tools touched it) opens again.
	return img.SetParentLink(engine.ParentInfo{UUID: pft.UUID, Timestamp: pft.Timestamp, Name: filepath.Base(parent), Locators: locs})
}

// parentFooter opens the parent to link to, with its chain (checking the
// chain as Open does), or as a raw disk image for a child whose parent is
// raw (blktap's vhd-util snapshot -m: no UUID, its file time as the
// timestamp), and returns its footer and what closes it.
func parentFooter(parent string, raw bool, opts Options) (engine.Footer, func(), error) {
	if raw {
		f, err := openRegular(parent)
		if err != nil {
			return engine.Footer{}, nil, err
		}
		img, err := engine.OpenRawParent(f, parent, engine.Options{ReadOnly: true, NoLock: opts.NoLock})
		if err != nil {
			return engine.Footer{}, nil, err
		}
		ft := img.Footer()
		if st, err := f.Stat(); err == nil {
			ft.Timestamp = engine.TimestampOf(st.ModTime()) // what blktap records of a raw parent
		}
		return ft, func() { img.Close() }, nil
	}
	opts.ReadOnly = true
	p, err := Open(parent, opts)
	if err != nil {
		return engine.Footer{}, nil, err
	}
	return p.Top().Footer(), func() { p.Close() }, nil
}
