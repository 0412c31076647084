package nbdserve

import "vhdkit/engine"

// ChangeLister is a disk that knows which of its extents changed since
// an earlier point in its life: a backup's read-only view of a frozen
// layer lists what the layers cut after the previous backup's point hold
// (vhdkit/backup). nbdserve offers the metadata context vhdkit:changed
// on exports whose disk is one, and answers it from ChangedExtents.
//
// It is declared here, where it is consumed, rather than among the
// capabilities of engine/capability.go: those are ones every wrapper of
// a disk forwards (a chain answers each for the whole chain, and the
// chains tests hold it to that), while "changed since the previous
// backup" is relative to a point chosen when a backup's view is cut and
// means nothing for a chain as such.
type ChangeLister interface {
	// ChangedExtents lists the runs of [off, off+n) written since the
	// point (with data or with zeros), in order, not overlapping, each
	// inside the range; what is not listed reads as it did at the point.
	// The runs' State is what they read as now (ExtentData or
	// ExtentZero).
	ChangedExtents(off, n int64) ([]engine.Extent, error)
}

// The vhdkit:changed metadata context. Its one flag, per extent:
//
//	bit 0 (1)  CHANGED: written since the previous backup's point (data
//	           or zeros); clear: reads as it did at that point.
//
// Other bits are reserved and sent as 0.
const (
	metaChangedName = "vhdkit:changed"
	metaChangedID   = 2
	stateChanged    = 1 << 0
)

// offersChanged reports whether an export's disk can answer
// vhdkit:changed.
func offersChanged(e *Export) bool {
	_, ok := e.Disk.(ChangeLister)
	return ok
}
