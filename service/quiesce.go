package service

import "context"

// A Quiescer brings the users of an export to a consistent point before a
// backup cuts it: the guest runner asks the guest's agent to freeze its
// filesystems (guest-fsfreeze-freeze) and thaws them after. A host with
// none cuts crash-consistent points: the requests in flight drained and
// the disk flushed, as after a power cut the guest recovers from.
type Quiescer interface {
	// Freeze quiesces what writes export. quiesced is false, with a nil
	// error, when nothing can be quiesced (no agent answers): the point
	// is then crash-consistent, and the caller says so. thaw is non-nil
	// whenever err is nil and must be called, also when what follows
	// fails or times out.
	Freeze(ctx context.Context, export string) (thaw func() error, quiesced bool, err error)
}

// SetQuiescer gives the host the Quiescer of the process that runs it
// (vhd run sets the guest's); nil means none.
func (h *Host) SetQuiescer(q Quiescer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.quiescer = q
}

// currentQuiescer is the Quiescer set, or nil.
func (h *Host) currentQuiescer() Quiescer {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.quiescer
}
