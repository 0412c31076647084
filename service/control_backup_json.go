package service

import "time"

// The JSON shapes of backups on the control socket (docs/CLI.md, "vhd
// backup"). Stable as the others: fields may be added, never renamed or
// removed, and every field is always present.

// BeginRequest is POST /v1/exports/{name}/backup.
type BeginRequest struct {
	// Since names the earlier point to list changes since: its UUID, or
	// the UUID of its backup file. "" is the newest point the chain
	// marks (none: a full backup only).
	Since string `json:"since"`
}

// EndRequest is POST /v1/exports/{name}/backup/end.
type EndRequest struct {
	// Keep the frozen layer as a restore point instead of folding it
	// into its parent.
	Keep bool `json:"keep"`
}

// PointRef names a point: its frozen layer and that layer's UUID.
type PointRef struct {
	Path string `json:"path"`
	UUID string `json:"uuid"`
}

// SinceRef is what a backup lists the changes since: the earlier point
// and the layers that hold the changes (top first).
type SinceRef struct {
	UUID   string   `json:"uuid"`
	Layers []string `json:"layers"`
}

// Consistency of a point.
const (
	// Quiesced: the guest's filesystems were frozen (qemu-guest-agent)
	// while the point was cut.
	Quiesced = "quiesced"
	// CrashConsistent: the requests in flight were drained and the disk
	// flushed; the point is what a power cut at that moment leaves.
	CrashConsistent = "crash-consistent"
)

// Backup is a backup running on an export, from begin to end.
type Backup struct {
	// Export is the disk's export; Name the backup's own, read-only.
	Export string   `json:"export"`
	Name   string   `json:"name"`
	URIs   []string `json:"uris"`
	// FUSE is where the backup export is mounted, or "".
	FUSE  string   `json:"fuse"`
	Point PointRef `json:"point"`
	// BackupUUID is the UUID `vhd backup pull` gives a backup of this
	// point (--since takes it to name the point).
	BackupUUID string `json:"backup_uuid"`
	// Since is null for a full backup only.
	Since       *SinceRef `json:"since"`
	Consistency string    `json:"consistency"`
	Started     time.Time `json:"started"`
	// Warning is what went wrong that did not stop the backup (a thaw
	// that failed), or "".
	Warning string `json:"warning"`
}

// BackupEnd is the reply to POST /v1/exports/{name}/backup/end.
type BackupEnd struct {
	Export string   `json:"export"`
	Name   string   `json:"name"`
	Point  PointRef `json:"point"`
	// Kept: the frozen layer stays as a restore point (--keep).
	Kept bool `json:"kept"`
	// Job folds the frozen layer into its parent (null when kept, or
	// when the point is the chain's base and has no parent).
	Job *Job `json:"job"`
	// Note says why nothing was folded, or "".
	Note string `json:"note"`
}

// BackupList is GET /v1/backups.
type BackupList struct {
	Backups []Backup      `json:"backups"`
	Points  []ChainPoints `json:"points"`
}

// ChainPoints are the points an export's chain holds as layers.
type ChainPoints struct {
	Export string        `json:"export"`
	Points []ListedPoint `json:"points"`
}

// ListedPoint is a point a chain holds: its frozen layer, still a layer
// of the chain.
type ListedPoint struct {
	PointRef
	BackupUUID string `json:"backup_uuid"`
	// Kept by `vhd backup end --keep`; Running: a backup of it runs;
	// Base: the chain's base, which an end cannot fold. None: left by a
	// backup that never ended (a server restart).
	Kept    bool `json:"kept"`
	Running bool `json:"running"`
	Base    bool `json:"base"`
}
