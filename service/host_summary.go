package service

import "vhdkit/chains"

// StopSummary says what stopping a host did, for the user who stopped
// it: how many clients it disconnected, which disks it flushed and
// closed, how many FUSE mounts it took down.
type StopSummary struct {
	Why     string   // "interrupted", "unmounted", ...
	Clients int64    // NBD clients connected when serving stopped
	Closed  []string // the disks flushed and closed, by label
	FUSE    int      // FUSE mounts unmounted
	// UndoRemoved are the undo disks closed holding no changes, and so
	// deleted (chains.Chain.UndoRemoved).
	UndoRemoved []string
}

// StopSummary is what the host's stop did; valid once Run returned.
func (h *Host) StopSummary() StopSummary {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.summary
}

// noteStop records why serving stops and who was connected, before the
// connections are closed.
func (h *Host) noteStop(why string) {
	var clients int64
	for _, st := range h.nbd.Stats() {
		clients += st.ClientsConnected
	}
	h.mu.Lock()
	h.summary.Why, h.summary.Clients = why, clients
	h.mu.Unlock()
}

// noteClosed records an export whose disk teardown flushed and closed.
func (h *Host) noteClosed(ex *Export, unmounted bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.summary.Closed = append(h.summary.Closed, ex.label())
	if vud := removedUndo(ex); vud != "" {
		h.summary.UndoRemoved = append(h.summary.UndoRemoved, vud)
	}
	if unmounted {
		h.summary.FUSE++
	}
}

// removedUndo names the undo disk closing ex deleted, or is "".
func removedUndo(ex *Export) string {
	c, ok := ex.Disk.(*chains.Chain)
	if !ok || !c.UndoRemoved() {
		return ""
	}
	return c.Layers()[0].Path
}
