// Package chains opens differencing chains as one disk and changes them:
// snapshots, merges, undo overlays, re-parenting, the chain tree of a
// folder, compaction and resizing.
//
// # Opening a chain
//
// Open starts from the image named and follows each differencing image to
// its parent: the W2ru locator (relative to the child's folder), then
// W2ku and MacX, then the parent's file name in the child's folder and in
// the allowed folders. A candidate is used only if it is a regular file
// holding a VHD with the UUID the child recorded; its size must match,
// and its timestamp must match the one the child recorded (0, the
// parent's footer timestamp, or its file modification time) unless
// Options.AcceptModifiedParent. Parents open read-only; only the top is
// ever written. A layer an unfinished merge left behind (its child, its
// target, or a chain through them) is refused with ErrMergeInterrupted,
// naming the `vhd merge` command that finishes it.
//
// # Untrusted images
//
// With Options.ParentDirs (--parent-dir, VHD_PARENT_PATH) set, a locator
// leading outside those folders, lexically or through a symlink, is an
// error, not a silent read. Devices, FIFOs and sockets are never opened
// (O_NONBLOCK, checked on the open descriptor). Cycles and chains deeper
// than Options.MaxDepth are errors.
//
// # Writing an image others depend on
//
// An image whose undo disk exists, or that differencing children record
// as their parent, is never opened for writing (ErrHasUndoDisk,
// ErrHasChildren): writing it would change what they read. Merge, Resize,
// ResetID and RefuseReplace check the same; their Force overrides
// children, never an undo disk. guard.go lists every path that writes an image and why
// the ones it allows (compaction, repair, set-parent) keep the view.
//
// # Reads
//
// A read finds the topmost layer holding each sector through a cache of
// per-chunk owner runs (resolve_cache.go): after a chunk's first read the
// cost does not grow with the chain's depth. Zero writes to the top are
// elided only where no ancestor holds data.
//
// The cache is bounded in bytes: Options.ReadCacheBytes, by default
// DefaultReadCacheBytes (64 MiB per open chain, at least 3 MiB). A chunk
// held by one layer costs about 100 bytes, one whose layers alternate
// sector by sector 48 KiB, so the default holds a TiB of the first kind
// or 2.7 GiB of the worst; past that, chunks are found again from the
// layers' extents when read.
//
// # Merges
//
// Merge copies a child (and the layers up to a chosen ancestor) into that
// ancestor and deletes them; the child's own children are moved onto the
// target, whose data is then exactly what they read through the child.
// Other images that depend on a deleted or changed layer make it refuse
// with ErrHasChildren (merge_plan.go). A journal and a target mark make
// it crash-safe and resumable; merge.go argues the order of its steps.
//
// # Rebase
//
// Rebase gives a differencing image another parent and keeps its view:
// what the new parent's chain reads differently, where the child holds
// nothing, is copied into the child before the link changes (rebase.go
// argues the order). SetParent only re-links.
//
// # Live changes
//
// An open Chain changes while it is read and written (live.go): Snapshot
// cuts a new top, Merge folds the top (a live commit) or a middle layer
// into its parent, UndoCommit and UndoDiscard act on a served undo disk,
// and View opens a read-only chain from a frozen layer down (a backup's
// point). Requests hold a write gate shared; a change prepares beside the
// traffic and holds the gate only for its swap. Each is crash-safe with
// the offline protocols (journal, mark, atomic renames): the order of its
// steps is argued in live_snapshot.go, live_merge_top.go,
// live_merge_middle.go and live_undo.go. A live merge that stopped (its
// context cancelled, a full disk) leaves its journal and the chain
// serving as before; until that same merge is run again, live or with
// `vhd merge` after the chain is closed, every other live change and
// view is refused (ErrMergeInterrupted). Tests kill a serving process at
// named points of each change (live_hook.go), cut the power under them
// (crashfile) and time their gate (BenchmarkLivePause).
//
// # Folder scans
//
// Scan (vhd tree) and Dependents read each image's footer, dynamic header
// and parent locators only (meta.go), never a BAT, so a folder of large
// or hostile images costs a few KiB each. Scan links images with Open's
// rules (link.go, linkHolds) and marks parents that form a cycle.
package chains
