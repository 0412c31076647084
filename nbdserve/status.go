package nbdserve

import (
	"encoding/binary"
	"errors"

	"vhdkit/engine"
)

// BLOCK_STATUS: one NBD_REPLY_TYPE_BLOCK_STATUS chunk per metadata
// context the client selected, base:allocation first, the last one
// flagged DONE. Each chunk is
//
//	0  context id (4)   then descriptors: length (4)  flags (4)
//
// and covers the request from its offset, stopping at the end of the
// range, at maxDescriptors descriptors (one with REQ_ONE), or once the
// request's length is covered; the client asks again from where a
// chunk stopped. The contexts' chunks may stop at different offsets.

const (
	// maxDescriptors bounds a context's descriptors in one reply.
	maxDescriptors = 1024
	// statusWindow is how much of the disk one Extents (or
	// ChangedExtents) call covers, which bounds the memory of one
	// BLOCK_STATUS however long its range.
	statusWindow = 16 << 20
)

var errBadChanges = errors.New("disk returned changed extents out of order or outside the range")

// descriptors accumulates one context's chunk payload, merging
// neighbouring runs with the same flags.
type descriptors struct {
	p     []byte
	count int
	limit int
	last  uint32
}

func newDescriptors(buf []byte, id uint32, limit int) *descriptors {
	return &descriptors{p: binary.BigEndian.AppendUint32(buf[:0], id), limit: limit}
}

// add appends a run; false once the chunk is full (the run not taken).
func (d *descriptors) add(n int64, flags uint32) bool {
	if d.count > 0 && flags == d.last {
		i := len(d.p) - 8
		binary.BigEndian.PutUint32(d.p[i:], binary.BigEndian.Uint32(d.p[i:])+uint32(n))
		return true
	}
	if d.count == d.limit {
		return false
	}
	d.p = binary.BigEndian.AppendUint32(d.p, uint32(n))
	d.p = binary.BigEndian.AppendUint32(d.p, flags)
	d.count++
	d.last = flags
	return true
}

// blockStatus builds the chunks of the contexts the client selected for
// [off, off+n): r.status for base:allocation, r.changed for
// vhdkit:changed.
func (c *conn) blockStatus(r *request, off, n int64) error {
	limit := maxDescriptors
	if r.flags&cmdFlagReqOne != 0 {
		limit = 1
	}
	r.status, r.changed = r.status[:0], r.changed[:0]
	if c.metaAlloc {
		d := newDescriptors(r.status, metaBaseAllocationID, limit)
		if err := c.allocationStatus(d, off, n); err != nil {
			return err
		}
		r.status = d.p
	}
	if c.metaChanged {
		d := newDescriptors(r.changed, metaChangedID, limit)
		if err := c.changedStatus(d, off, n); err != nil {
			return err
		}
		r.changed = d.p
	}
	return nil
}

// allocationStatus answers base:allocation from Disk.Extents, a window
// at a time so memory stays bounded.
func (c *conn) allocationStatus(d *descriptors, off, n int64) error {
	end := off + n
	for pos := off; pos < end; {
		w := min(end-pos, statusWindow)
		ext, err := c.export.Disk.Extents(pos, w)
		if err != nil {
			return err
		}
		if !covers(ext, pos, w) {
			return errBadExtents
		}
		for _, e := range ext {
			if !d.add(e.Len, c.statusFlags(e.State)) {
				return nil
			}
		}
		pos += w
	}
	return nil
}

// changedStatus answers vhdkit:changed from the disk's ChangeLister: the
// runs it lists are CHANGED, the gaps between them 0.
func (c *conn) changedStatus(d *descriptors, off, n int64) error {
	cl, ok := c.export.Disk.(ChangeLister)
	if !ok {
		return errNoContext
	}
	end := off + n
	for pos := off; pos < end; {
		w := min(end-pos, statusWindow)
		runs, err := cl.ChangedExtents(pos, w)
		if err != nil {
			return err
		}
		full, err := addChanges(d, runs, pos, w)
		if err != nil || full {
			return err
		}
		pos += w
	}
	return nil
}

// addChanges adds the window [pos, pos+w) given its changed runs; full
// reports that the chunk filled up.
func addChanges(d *descriptors, runs []engine.Extent, pos, w int64) (full bool, err error) {
	at, end := pos, pos+w
	for _, e := range runs {
		if e.Off < at || e.Len <= 0 || e.Len > end-e.Off {
			return false, errBadChanges
		}
		if e.Off > at && !d.add(e.Off-at, 0) {
			return true, nil
		}
		if !d.add(e.Len, stateChanged) {
			return true, nil
		}
		at = e.Off + e.Len
	}
	if at < end && !d.add(end-at, 0) {
		return true, nil
	}
	return false, nil
}
