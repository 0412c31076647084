package engine

import "fmt"

// Freeze makes a writable image read-only in place, as a live snapshot
// needs of the layer it cuts a new top over: everything written is made
// durable (flush, then the tail cut as Close does), writes are refused
// from then on, and the exclusive OS lock becomes a shared one, so other
// readers may open the image while this one keeps reading it. Its
// footer, and so the timestamp a child records, no longer changes.
//
// No other I/O may run on the image meanwhile (a chain's write gate
// holds it off). A failed flush leaves the image writable and the error
// returned: nothing is known to be durable, so it must not be frozen.
func (img *Image) Freeze() error {
	if img.closed.Load() {
		return ErrClosed
	}
	if img.readOnly {
		return nil
	}
	if err := img.lay.flush(); err != nil {
		return err
	}
	if img.sparse != nil {
		if err := img.sparse.trimTail(); err != nil {
			return err
		}
	}
	img.readOnly = true
	if img.share != nil {
		if err := img.share(); err != nil {
			return fmt.Errorf("freeze %s: %w", img.name, err)
		}
	}
	return nil
}
