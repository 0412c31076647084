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

// Stamp flushes the image and, if this open has not stamped the footer
// yet (a flush stamps it only once data was written), stamps it now. From
// then until the image is closed its footer timestamp no longer changes:
// a child made over it (a live snapshot) records the timestamp it keeps,
// even if it is written and flushed again before it is frozen.
func (img *Image) Stamp() error {
	if img.closed.Load() {
		return ErrClosed
	}
	if img.readOnly {
		return ErrReadOnly
	}
	if !img.stamped.Load() {
		// Something to flush, so that the flush writes the stamp.
		switch l := img.lay.(type) {
		case *sparse:
			l.dataDirty.Store(true)
		case *fixed:
			l.dirty.Store(true)
		}
	}
	return img.lay.flush()
}
