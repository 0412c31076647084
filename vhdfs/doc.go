// Package vhdfs shows one engine.Disk as a FUSE filesystem (go-fuse v2):
// the disk as a file, one file per partition, and a description. It is
// what `vhd mount` serves, and what `vhd serve --fuse` is meant to serve
// beside NBD from the same open disk.
//
// # What the mount holds
//
//	MOUNTPOINT/
//	  disk        the whole virtual disk, a regular file of its size
//	  p1, p2 ...  one file per partition of an MBR (p5 and up: logical
//	              partitions) or GPT table, Linux's numbering
//	  info.json   read-only: Options.Info, size, mode, partition table
//	  fs/         with Options.FSDirs: one empty folder per partition
//	              (fs/disk without a table), mount points for the
//	              filesystems inside (`vhd mount --fs`)
//
// Files have fixed sizes: writes past the end get ENOSPC, truncation to
// another size EPERM. Partition files are windows of the disk, bounded
// by the partition. The table is read at mount time and again after
// writes through disk (at its next fsync, close, or lookup in the root),
// so a table written with sfdisk or parted through disk shows up without
// remounting; lookups are never cached by the kernel (entry timeouts are
// zero), so names appear and disappear at once.
//
// # Semantics
//
//   - read/write go to Disk.ReadAt/WriteAt at the file's offset (plus
//     the partition's start). Requests are up to 1 MiB (MaxWrite, which
//     also sets max_read); reads are answered in parallel (SyncRead
//     off), and so are direct writes (FOPEN_PARALLEL_DIRECT_WRITES).
//   - fsync and fdatasync call Disk.Flush: when they return, every write
//     acknowledged before is durable, data and metadata. close(2)
//     (FLUSH) flushes too. After the unmount, Server.Wait flushes once
//     more.
//   - fallocate: PUNCH_HOLE|KEEP_SIZE is Disk.Zero(ZeroMayDeallocate)
//     (whole blocks are freed; the range reads as zeros even over a
//     differencing parent, which Trim would not promise); ZERO_RANGE is
//     Disk.Zero(ZeroKeepAllocated); plain allocation inside the file
//     succeeds without doing anything; other modes are EOPNOTSUPP.
//   - lseek SEEK_DATA/SEEK_HOLE come from Disk.Extents, walked in 64 MiB
//     windows: only ExtentData is data, so `cp --sparse`, tar --sparse
//     and backup tools skip unallocated and known-zero space. An empty
//     1 TiB dynamic disk answers in milliseconds.
//   - stat: st_size is the file's size; st_blocks counts allocated
//     bytes (data and zero extents), recounted at most once a second
//     while the disk changes.
//   - A read-only mount (Options.ReadOnly or a read-only disk) refuses
//     opens for writing and every write with EROFS.
//
// # Permissions
//
// Everything belongs to the user who mounted, and the kernel checks
// every access against the modes shown (the mount carries
// default_permissions; the handlers never see who calls). The owner
// reads, and writes unless the mount is read-only; group and others get
// only the bits in Options.GroupOtherPerm, none by default. A read-only
// mount shows no write bits, info.json none ever; folders show a search
// bit for each class that reads. Other users need Options.AllowOther
// as well: without it the kernel lets nobody else in, whatever the
// modes. chmod and chown change nothing (perm.go).
//
// # Caching and O_DIRECT
//
// Files are opened with FOPEN_DIRECT_IO unless Options.PageCache is set:
// the kernel keeps no page cache for them. disk and its partition files
// alias the same bytes, and another export of the same Disk (NBD in
// `vhd serve`) writes behind the kernel's back; a page cache would serve
// stale data through one name after a write through another. Direct I/O
// also lets every read be one 1 MiB request instead of readahead-sized
// ones. O_DIRECT opens (fio --direct=1, dd oflag=direct) work either way,
// and with FUSE_ASYNC_DIO negotiated the kernel keeps a whole libaio
// queue in flight (without it, 4 KiB random reads at queue depth 32 ran
// at half the rate). mmap of the files is allowed where the kernel
// supports mmap on direct_io files (FUSE_DIRECT_IO_ALLOW_MMAP, 6.6+).
//
// # Errors and panics
//
// engine.ErrReadOnly becomes EROFS, ErrOutOfRange ENOSPC, an errno from
// the file system below is passed on, anything else (a corrupt image, an
// I/O error) is EIO and is logged through Options.Logger (silent if
// nil). A panic inside a request handler is recovered by go-fuse's
// server loop (MountOptions.PanicHandler, which vhdfs sets to log with
// the stack) and answered EIO: the mount stays up.
//
// # Lifetime
//
// Mount returns once the kernel answers requests. The disk stays the
// caller's: Wait returns after the filesystem is unmounted (Unmount,
// umount(8), fusermount3 -u) and flushes the disk; then close it. If the
// serving process dies, the kernel keeps a dead mount (ENOTCONN) until
// someone unmounts it (`vhd umount` does, lazily); the image is as
// consistent as after any crash: every fsync'ed write is there.
//
// As root the mount is made with mount(2) directly; otherwise go-fuse
// runs fusermount3 (package fuse3).
//
// # Partition tables
//
// ReadTable (partition.go, which draws the MBR and GPT layouts) reads a
// disk's table for the partition files and info.json, and for `vhd
// resize --to-minimum`. PlanGPTShrink and GPTShrink.MoveBackup (gpt_move.go)
// are the one place vhdkit writes a table: they move a GPT's backup to
// the end of the last partition so the disk can shrink to it, in an
// order that leaves a valid table after a crash at any write.
package vhdfs
