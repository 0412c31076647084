package service

import (
	"time"

	"vhdkit/chains"
	"vhdkit/nbdserve"
)

// The control socket's JSON shapes (docs/CLI.md, "vhd ctl", lists them
// with the routes). They are stable: fields may be added, never renamed
// or removed, and every field is always present (null or empty when it
// does not apply), so scripts can rely on them.

// Status is GET /v1/status: everything the process serves and does.
type Status struct {
	// PID is the serving process.
	PID int `json:"pid"`
	// Control is the control socket's path.
	Control string `json:"control"`
	// Exports, sorted by name.
	Exports []ExportStatus `json:"exports"`
	// FUSEMounts are the exports' FUSE mount points, sorted.
	FUSEMounts []string `json:"fuse_mounts"`
	// Jobs are the jobs running and the last ones that ended, oldest
	// first.
	Jobs []Job `json:"jobs"`
	// Backups are the backups running (vhd backup), by export.
	Backups []Backup `json:"backups"`
}

// ExportStatus describes one export.
type ExportStatus struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// URIs reach it over NBD, one per listener.
	URIs []string `json:"uris"`
	// Layers are the files of its chain, top first (writes go to the
	// first unless read-only); empty for a disk that is not a chain.
	Layers   []string `json:"layers"`
	ReadOnly bool     `json:"read_only"`
	// Undo: it is served on its image's undo disk (the top layer), so
	// undo commit and discard apply.
	Undo bool `json:"undo"`
	// ViewOf is the export whose frozen layer this read-only export
	// shows (add --view-of), or "".
	ViewOf string `json:"view_of"`
	// FUSE is its FUSE mount point, or "".
	FUSE string `json:"fuse"`
	// Job is the id of the live operation running on it, or 0.
	Job int64 `json:"job"`
	// NBD counts its clients and requests since it was added.
	NBD nbdserve.ExportStats `json:"nbd"`
}

// Job states.
const (
	JobRunning    = "running"
	JobCancelling = "cancelling"
	JobSucceeded  = "succeeded"
	JobFailed     = "failed"
	JobCancelled  = "cancelled"
)

// Job kinds.
const (
	JobMerge      = "merge"
	JobUndoCommit = "undo-commit"
)

// Job is a live operation that runs beyond the request that started it
// (a merge, an undo commit).
type Job struct {
	ID     int64  `json:"id"`
	Kind   string `json:"kind"`
	Export string `json:"export"`
	// Layer is the layer folded into its parent.
	Layer string `json:"layer"`
	// State is running, cancelling, succeeded, failed or cancelled.
	State string `json:"state"`
	// DoneBytes of TotalBytes are copied (the total grows when writes
	// land on what was already copied).
	DoneBytes  int64      `json:"done_bytes"`
	TotalBytes int64      `json:"total_bytes"`
	Started    time.Time  `json:"started"`
	Ended      *time.Time `json:"ended"`
	// Result is what a job that succeeded did.
	Result *chains.MergeResult `json:"result"`
	// Error is why a job failed or what cancelling it left.
	Error *APIError `json:"error"`
}

// Finished reports whether the job has ended.
func (j *Job) Finished() bool { return j.Ended != nil }

// SnapshotRequest is POST /v1/exports/{name}/snapshot.
type SnapshotRequest struct {
	// NewTop is the new top layer's file: absolute, not existing.
	NewTop string `json:"new_top"`
}

// MergeRequest is POST /v1/exports/{name}/merge.
type MergeRequest struct {
	// Layer is the layer to fold into its parent (absolute); "" is the
	// top.
	Layer string `json:"layer"`
}

// AddRequest is POST /v1/exports: an image opened with its chain, or a
// read-only view of a served export's frozen layer.
type AddRequest struct {
	Name string `json:"name"`
	// Image is the image to open (absolute); or
	Image string `json:"image"`
	// ViewOf is the export whose frozen layer Layer (absolute; "" is the
	// newest frozen one) is exported read-only.
	ViewOf string `json:"view_of"`
	Layer  string `json:"layer"`
	// ReadOnly and Undo say how Image is opened.
	ReadOnly bool `json:"read_only"`
	Undo     bool `json:"undo"`
	// FUSE is a folder to mount the export at over FUSE (absolute); ""
	// mounts it under the process's FUSE root, if it has one.
	FUSE string `json:"fuse"`
}

// Removed is the reply to DELETE /v1/exports/{name}.
type Removed struct {
	Removed string `json:"removed"`
}

// APIError is every error reply's "error": a stable code and a one-line
// message saying what happened and what to do.
type APIError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// errorReply is the body of every error reply.
type errorReply struct {
	Error *APIError `json:"error"`
}
