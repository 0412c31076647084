// Package backup is consistent backups of running disks, full and
// incremental, pulled over NBD: the points a served chain keeps for them,
// the read-only disk a backup export serves (ChangedView), and Pull, the
// client side that copies an export into a VHD. service/control_backup.go
// drives the server side (`vhd backup begin|end|list`); docs/BACKUP.md is
// the user's guide.
//
// # Points and change tracking
//
// A backup begins by cutting a point: the export's top is frozen by a
// live snapshot and the new top is named
//
//	STEM.since-UUID.vhd        (UUID: the frozen layer's, the point's)
//
// beside it (MarkerPath). Every write after the point lands in that
// layer or in one cut above it later; layers are only ever cut on top
// and merged downward. So at the next point, the layers from the new
// frozen layer down to the newest marker hold exactly the blocks written
// since the earlier point: change tracking is the chain itself, on disk,
// and survives restarts (QEMU's dirty bitmaps on NBD nodes do not). A
// merge that folds a marker into its parent erases that knowledge, and
// FindSince then finds no such point: the next backup is a full one. The
// frozen layer of a point may be folded into its parent once its backup
// ended (`vhd backup end`): the marker above it stays, and the parent
// then holds the point.
//
// The backup export serves the frozen layer read-only with the layers
// under it (chains.Chain.View), as a ChangedView when an earlier point
// is marked: its ChangedExtents (nbdserve.ChangeLister) are what those
// layers hold, and nbdserve offers them as the metadata context
// vhdkit:changed. Its NBD description says which point it serves and
// which it lists changes since (Identity.Description):
//
//	vhdkit backup point=UUID since=UUID|none
//
// A backup of point P is a VHD whose UUID is BackupUUID(P), derived from
// P, so an incremental can check that its --since file is the backup of
// the very point the export lists changes since; an incremental of point
// Q over the backup of P is a differencing VHD over it, and a chain of
// backups is an ordinary VHD chain.
//
// `vhd backup end --keep` leaves the frozen layer as a restore point and
// marks it kept (LAYER.kept, MarkKept), so a later end does not fold the
// next point into it.
//
// # Pulling
//
// Pull plans from block status (base:allocation for a full backup,
// vhdkit:changed for an incremental) the pieces to copy, each inside one
// 2 MiB block, then copies them over several connections (multi-conn)
// with several READs in flight on each (every one TLS for an nbds URI,
// PullOptions.TLS naming the CA and client certificate), into DEST.part: data written,
// zeros skipped in a full backup (a new dynamic image reads zeros) and
// written as zeros in an incremental (they must hide the base's data).
// copy.go argues the checkpoint order that makes a pull resumable
// (DEST.part.state, state.go): the image is flushed before the log names
// its pieces. At the end every piece is read back from DEST.part and its
// CRC-32C compared with the one taken as it arrived, the image is
// checked (vhd check), and only then renamed to DEST, never over an
// existing file: DEST never exists half-written.
//
// A rerun after an interruption resumes if DEST.part.state describes the
// same export point (and base); otherwise it starts over, saying so. A
// server that does not say which point it serves (nbdkit, qemu-nbd) is
// never resumed from: its data may have changed.
package backup
