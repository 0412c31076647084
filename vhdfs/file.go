package vhdfs

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"vhdkit/engine"
)

// dataNode is `disk` (part 0) or partition file pN: a window of the disk.
// The window of a partition is looked up in the current table on every
// request, so a re-read table takes effect at once; a partition that is
// gone answers ENXIO.
type dataNode struct {
	fs.Inode
	root  *root
	part  int
	alloc allocCache
}

var (
	_ fs.NodeOpener    = (*dataNode)(nil)
	_ fs.NodeReader    = (*dataNode)(nil)
	_ fs.NodeWriter    = (*dataNode)(nil)
	_ fs.NodeFsyncer   = (*dataNode)(nil)
	_ fs.NodeFlusher   = (*dataNode)(nil)
	_ fs.NodeReleaser  = (*dataNode)(nil)
	_ fs.NodeAllocater = (*dataNode)(nil)
	_ fs.NodeLseeker   = (*dataNode)(nil)
	_ fs.NodeGetattrer = (*dataNode)(nil)
	_ fs.NodeSetattrer = (*dataNode)(nil)
)

// window is the node's [start, start+length) of the disk.
func (n *dataNode) window() (start, length int64, errno syscall.Errno) {
	if n.part == 0 {
		return 0, n.root.disk.Size(), 0
	}
	p, ok := n.root.part(n.part)
	if !ok {
		return 0, 0, syscall.ENXIO
	}
	return p.Start, p.Len, 0
}

func (n *dataNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if _, _, e := n.window(); e != 0 {
		return nil, 0, e
	}
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 && n.root.readOnly {
		return nil, 0, syscall.EROFS
	}
	var ff uint32
	if !n.root.opts.PageCache {
		ff = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES
	}
	return nil, ff, 0
}

// clip bounds a request of n bytes at off to the window, returning the
// disk offset and the length to use.
func clip(start, length, off int64, n int) (int64, int) {
	if off < 0 || off >= length {
		return 0, 0
	}
	return start + off, int(min(int64(n), length-off))
}

func (n *dataNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	start, length, e := n.window()
	if e != 0 {
		return nil, e
	}
	doff, cnt := clip(start, length, off, len(dest))
	if cnt == 0 {
		return fuse.ReadResultData(nil), 0
	}
	got, err := n.root.disk.ReadAt(dest[:cnt], doff)
	if err != nil && got < cnt {
		n.root.log.Warn("vhdfs: read", "file", n.name(), "off", off, "len", cnt, "err", err)
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n *dataNode) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.root.readOnly {
		return 0, syscall.EROFS
	}
	start, length, e := n.window()
	if e != 0 {
		return 0, e
	}
	doff, cnt := clip(start, length, off, len(data))
	if cnt == 0 {
		// A file of fixed size: nothing can be written past its end.
		return 0, syscall.ENOSPC
	}
	if n.part == 0 {
		n.root.dirty.Store(true)
	}
	written, err := n.root.disk.WriteAt(data[:cnt], doff)
	n.root.changed()
	if err != nil {
		n.root.log.Warn("vhdfs: write", "file", n.name(), "off", off, "len", cnt, "err", err)
		return 0, errno(err)
	}
	return uint32(written), 0
}

// Fsync makes every write acknowledged so far durable, data and
// metadata: Disk.Flush. fdatasync is the same (the disk has no file
// metadata of its own that could be skipped).
func (n *dataNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	n.root.rereadIfDirty()
	if n.root.readOnly {
		return 0
	}
	if err := n.root.disk.Flush(); err != nil {
		n.root.log.Warn("vhdfs: flush", "err", err)
		return errno(err)
	}
	return 0
}

// Flush runs at every close(2) of a descriptor. close is not a durability
// point (fsync is), but flushing here costs little and makes "close then
// pull the plug" as safe as on a block device opened with O_SYNC.
func (n *dataNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return n.Fsync(ctx, f, 0)
}

func (n *dataNode) Release(ctx context.Context, f fs.FileHandle) syscall.Errno {
	n.root.rereadIfDirty()
	return 0
}

// Allocate is fallocate(2):
//
//	PUNCH_HOLE|KEEP_SIZE  Zero(ZeroMayDeallocate): reads zeros, space freed
//	ZERO_RANGE            Zero(ZeroKeepAllocated): reads zeros, stays allocated
//	0 or KEEP_SIZE        nothing to do inside the file (its size is fixed)
//
// Everything else is EOPNOTSUPP. Ranges past the end are clipped (the
// file cannot grow).
func (n *dataNode) Allocate(ctx context.Context, f fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	if n.root.readOnly {
		return syscall.EROFS
	}
	start, length, e := n.window()
	if e != 0 {
		return e
	}
	if off > uint64(length) {
		off = uint64(length)
	}
	size = min(size, uint64(length)-off)
	var zm engine.ZeroMode
	switch mode {
	case unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE:
		zm = engine.ZeroMayDeallocate
	case unix.FALLOC_FL_ZERO_RANGE, unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE:
		zm = engine.ZeroKeepAllocated
	case 0, unix.FALLOC_FL_KEEP_SIZE:
		if off+size < uint64(length) || size == 0 {
			return 0
		}
		return syscall.EFBIG
	default:
		return syscall.EOPNOTSUPP
	}
	if size == 0 {
		return 0
	}
	if n.part == 0 {
		n.root.dirty.Store(true)
	}
	err := n.root.disk.Zero(start+int64(off), int64(size), zm)
	n.root.changed()
	if err != nil {
		n.root.log.Warn("vhdfs: fallocate", "file", n.name(), "mode", mode, "err", err)
	}
	return errno(err)
}

// extentWindow bounds one Extents call: at most extentWindow/512
// extents come back.
const extentWindow = 64 << 20

// Lseek answers SEEK_DATA and SEEK_HOLE from the disk's extent map: data
// is ExtentData; ExtentZero and ExtentHole read as zeros and count as
// holes. The kernel answers SEEK_SET, SEEK_CUR and SEEK_END itself.
func (n *dataNode) Lseek(ctx context.Context, f fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	start, length, e := n.window()
	if e != 0 {
		return 0, e
	}
	if whence != unix.SEEK_DATA && whence != unix.SEEK_HOLE {
		return 0, syscall.EINVAL
	}
	if off >= uint64(length) {
		return 0, syscall.ENXIO
	}
	wantData := whence == unix.SEEK_DATA
	for pos := int64(off); pos < length; {
		if err := ctxErr(ctx); err != 0 {
			return 0, err
		}
		w := min(int64(extentWindow), length-pos)
		list, err := n.root.disk.Extents(start+pos, w)
		if err != nil {
			return 0, errno(err)
		}
		for _, x := range list {
			if (x.State == engine.ExtentData) == wantData {
				return uint64(max(x.Off-start, pos)), 0
			}
		}
		pos += w
	}
	if wantData {
		return 0, syscall.ENXIO
	}
	return uint64(length), 0 // the implicit hole at the end
}

// ctxErr reports an interrupted request.
func ctxErr(ctx context.Context) syscall.Errno {
	if ctx.Err() != nil {
		return syscall.EINTR
	}
	return 0
}

func (n *dataNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	start, length, e := n.window()
	if e != 0 {
		return e
	}
	out.Mode = syscall.S_IFREG | n.root.perms.data
	out.Nlink = 1
	n.root.stamp(&out.Attr)
	out.Size = uint64(length)
	out.Blksize = 4096
	out.Blocks = uint64(n.alloc.get(n.root, start, length)+511) / 512
	return 0
}

// Setattr accepts what does not change the file (chmod, utimes and a
// truncate to its own size, which O_TRUNC and some tools send) and
// refuses a size change: a disk's size is fixed ('vhd resize'). chmod
// changes nothing: the modes are the mount's (Options.GroupOtherPerm).
func (n *dataNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	_, length, e := n.window()
	if e != 0 {
		return e
	}
	if sz, ok := in.GetSize(); ok && sz != uint64(length) {
		return syscall.EPERM
	}
	return n.Getattr(ctx, f, out)
}

func (n *dataNode) name() string {
	if n.part == 0 {
		return "disk"
	}
	return partName(n.part)
}

// changed notes a write, for the allocation caches.
func (r *root) changed() { r.gen.Add(1) }

// allocCache remembers the allocated bytes of a window: counting walks
// the extent map, too slow for every stat. It is recounted when the disk
// changed, at most once a second.
type allocCache struct {
	mu    sync.Mutex // guards the fields below
	gen   int64      // root.gen when counted
	at    time.Time
	start int64
	n     int64
	bytes int64
	valid bool
}

func (c *allocCache) get(r *root, start, n int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	gen := r.gen.Load()
	if c.valid && c.start == start && c.n == n && (c.gen == gen || time.Since(c.at) < time.Second) {
		return c.bytes
	}
	d := r.disk
	var total int64
	for pos := start; pos < start+n; {
		w := min(int64(extentWindow), start+n-pos)
		list, err := d.Extents(pos, w)
		if err != nil {
			return c.bytes
		}
		for _, x := range list {
			if x.State != engine.ExtentHole {
				total += x.Len
			}
		}
		pos += w
	}
	c.valid, c.start, c.n, c.bytes, c.at, c.gen = true, start, n, total, time.Now(), gen
	return total
}
