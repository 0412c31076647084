package vhdfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"vhdkit/engine"
)

// MaxIO is the largest read or write request: 1 MiB, the kernel's limit.
const MaxIO = 1 << 20

// Options say how a disk is mounted.
type Options struct {
	// ReadOnly refuses writes (EROFS) even if the disk takes them.
	ReadOnly bool
	// AllowOther lets users other than the mounting one in (needs
	// user_allow_other in /etc/fuse.conf unless root). What they may
	// do is what the modes say (GroupOtherPerm, perm.go).
	AllowOther bool
	// GroupOtherPerm is the group and other read/write bits of the
	// files (0o044: they read; 0o066: they write too). 0, the default:
	// the owner alone. The kernel enforces the modes (perm.go).
	GroupOtherPerm uint32
	// PageCache lets the kernel cache file data (no direct_io). Off by
	// default: disk and its partition files alias the same bytes, and
	// other exports of the same Disk (NBD) write under the kernel's feet,
	// so cached pages could be stale. See the package doc.
	PageCache bool
	// FSDirs adds a folder fs/ holding one empty folder per partition
	// (or fs/disk without a partition table): mount points for the
	// filesystems inside.
	FSDirs bool
	// Info is shown, with the partition table, as info.json.
	Info any
	// FsName is the mount's source in the mount table (the image path).
	FsName string
	// Logger gets request errors and recovered panics; silent if nil.
	Logger *slog.Logger
	// Debug logs every FUSE request (to Logger).
	Debug bool
}

// Server serves one mounted disk (a Mount).
type Server struct {
	server *fuse.Server
	root   *root
	done   chan struct{}
}

// Mount mounts disk at mountpoint and returns once the kernel answers
// requests on it. The disk stays the caller's: close it after Wait
// returns. ctx bounds the mount itself, not the mount's life: end that
// with Unmount.
func Mount(ctx context.Context, disk engine.Disk, mountpoint string, opts Options) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkDevice(); err != nil {
		return nil, fmt.Errorf("vhdfs: mount %s: %w", mountpoint, err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &root{disk: disk, opts: opts, log: logger, readOnly: opts.ReadOnly || disk.ReadOnly(), mounted: time.Now()}
	var err error
	if r.perms, err = newPerms(opts.GroupOtherPerm, r.readOnly); err != nil {
		return nil, err
	}
	if err := r.reread(); err != nil {
		return nil, err
	}
	zero := time.Duration(0)
	second := time.Second
	stdlog := slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	fo := &fs.Options{
		// Names come and go with the partition table: never cache a
		// lookup. Attributes (sizes) are fixed for a given name but
		// st_blocks moves; a second is fine for that.
		EntryTimeout: &zero,
		// Every node belongs to whoever mounted (root's 0 is go-fuse's
		// default), so a user's own mount shows their files as theirs.
		UID:             uint32(os.Getuid()),
		GID:             uint32(os.Getgid()),
		NegativeTimeout: &zero,
		AttrTimeout:     &second,
		Logger:          stdlog,
		MountOptions: fuse.MountOptions{
			AllowOther:   opts.AllowOther,
			FsName:       orDefault(opts.FsName, "vhd"),
			Name:         "vhd",
			MaxWrite:     MaxIO,
			MaxReadAhead: MaxIO,
			// Reads run in parallel; the engine is safe for concurrent
			// use.
			SyncRead: false,
			// ASYNC_DIO lets the kernel keep many O_DIRECT/libaio
			// requests in flight instead of one per submitting thread
			// (fio --iodepth=32); DIRECT_IO_ALLOW_MMAP lets programs mmap
			// the direct_io files (kernel 6.6 and later).
			ExtraCapabilities: fuse.CAP_ASYNC_DIO | fuse.CAP_DIRECT_IO_ALLOW_MMAP,
			MaxBackground:     64,
			Debug:             opts.Debug,
			Logger:            stdlog,
			// go-fuse recovers a panicking handler into EIO; this
			// handler logs it through our logger with the stack.
			PanicHandler: func(v any) fuse.Status {
				logger.Error("vhdfs: panic in a request handler; answered EIO", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				return fuse.EIO
			},
			// Root mounts directly (no fusermount3 needed); others
			// fall back to fusermount3.
			DirectMount: true,
		},
	}
	// The kernel checks every access against the modes (perm.go).
	fo.MountOptions.Options = append(fo.MountOptions.Options, "default_permissions")
	if r.readOnly {
		fo.MountOptions.Options = append(fo.MountOptions.Options, "ro")
	}
	type result struct {
		s   *fuse.Server
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := fs.Mount(mountpoint, r, fo)
		ch <- result{s, err}
	}()
	var res result
	select {
	case res = <-ch:
	case <-ctx.Done():
		// The mount finishes or fails on its own; undo it if it
		// succeeded.
		go func() {
			if res := <-ch; res.err == nil {
				res.s.Unmount()
			}
		}()
		return nil, ctx.Err()
	}
	if res.err != nil {
		return nil, fmt.Errorf("vhdfs: mount %s: %w", mountpoint, res.err)
	}
	m := &Server{server: res.s, root: r, done: make(chan struct{})}
	go func() {
		res.s.Wait()
		close(m.done)
	}()
	return m, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Wait returns once the filesystem is unmounted (by Unmount, umount(8)
// or fusermount3 -u) and every request has been answered. It then
// flushes the disk once more, so a writable disk is durable whatever the
// last client did.
func (m *Server) Wait() error {
	<-m.done
	if m.root.readOnly {
		return nil
	}
	return m.root.disk.Flush()
}

// Done is closed when the filesystem is unmounted.
func (m *Server) Done() <-chan struct{} { return m.done }

// Unmount asks the kernel to unmount. It fails with EBUSY while files
// are open or something is mounted below.
func (m *Server) Unmount() error { return m.server.Unmount() }

// Table is the partition table the mount shows now.
func (m *Server) Table() *Table { return m.root.table.Load() }

// root is the mount's root folder.
type root struct {
	fs.Inode
	disk     engine.Disk
	opts     Options
	log      *slog.Logger
	readOnly bool
	perms    perms

	// table is the partition table, replaced whole on every re-read.
	table atomic.Pointer[Table]
	// dirty is set by writes through disk; the table is read again at
	// the next flush, fsync or close of disk, or lookup in the root.
	dirty atomic.Bool
	// rereadMu serialises re-reads.
	rereadMu sync.Mutex
	// blocks caches the allocated bytes of the whole disk (statfs).
	blocks allocCache
	// gen counts changes to the disk, for the allocation caches.
	gen atomic.Int64
	// mounted is when the mount was made: every node's times, so ls
	// shows when the disk appeared rather than 1970.
	mounted time.Time
}

// stamp sets a node's access, change and modification times.
func (r *root) stamp(a *fuse.Attr) {
	a.SetTimes(&r.mounted, &r.mounted, &r.mounted)
}

// dirAttr is every folder's mode and times.
func (r *root) dirAttr(a *fuse.Attr) {
	a.Mode = syscall.S_IFDIR | r.perms.dir
	r.stamp(a)
}

var (
	_ fs.NodeLookuper  = (*root)(nil)
	_ fs.NodeReaddirer = (*root)(nil)
	_ fs.NodeGetattrer = (*root)(nil)
	_ fs.NodeStatfser  = (*root)(nil)
)

// reread reads the partition table again.
func (r *root) reread() error {
	r.rereadMu.Lock()
	defer r.rereadMu.Unlock()
	r.dirty.Store(false)
	t, err := ReadTable(r.disk, r.disk.Size())
	if err != nil {
		return err
	}
	if t.Partitions == nil {
		t.Partitions = []Partition{}
	}
	r.table.Store(t)
	return nil
}

// rereadIfDirty re-reads the table after writes through disk.
func (r *root) rereadIfDirty() {
	if r.dirty.Load() {
		if err := r.reread(); err != nil {
			r.log.Warn("vhdfs: reading the partition table", "err", err)
		}
	}
}

// Inode numbers: fixed for the fixed names, 1000+N for partition N, so
// a partition keeps its number across re-reads.
const (
	inoDisk  = 2
	inoInfo  = 3
	inoFSDir = 4
	inoPart  = 1000
	inoFSSub = 2000 // fs/pN; fs/disk is inoFSSub
)

func partName(n int) string { return fmt.Sprintf("p%d", n) }

// names lists the root's entries.
func (r *root) names() []fuse.DirEntry {
	list := []fuse.DirEntry{
		{Name: "disk", Ino: inoDisk, Mode: syscall.S_IFREG},
		{Name: "info.json", Ino: inoInfo, Mode: syscall.S_IFREG},
	}
	for _, p := range r.table.Load().Partitions {
		list = append(list, fuse.DirEntry{Name: partName(p.Number), Ino: inoPart + uint64(p.Number), Mode: syscall.S_IFREG})
	}
	if r.opts.FSDirs {
		list = append(list, fuse.DirEntry{Name: "fs", Ino: inoFSDir, Mode: syscall.S_IFDIR})
	}
	return list
}

func (r *root) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	r.rereadIfDirty()
	return fs.NewListDirStream(r.names()), 0
}

func (r *root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	r.rereadIfDirty()
	var node fs.InodeEmbedder
	var ino uint64
	mode := uint32(syscall.S_IFREG)
	switch {
	case name == "disk":
		node, ino = &dataNode{root: r}, inoDisk
	case name == "info.json":
		node, ino = &infoNode{root: r}, inoInfo
	case name == "fs" && r.opts.FSDirs:
		node, ino, mode = &fsDir{root: r}, inoFSDir, syscall.S_IFDIR
	default:
		n, ok := r.partByName(name)
		if !ok {
			return nil, syscall.ENOENT
		}
		node, ino = &dataNode{root: r, part: n}, inoPart+uint64(n)
	}
	ch := r.NewInode(ctx, node, fs.StableAttr{Mode: mode, Ino: ino})
	if ga, ok := node.(fs.NodeGetattrer); ok {
		var a fuse.AttrOut
		ga.Getattr(ctx, nil, &a)
		out.Attr = a.Attr
	}
	return ch, 0
}

// partByName finds partition "pN" in the current table.
func (r *root) partByName(name string) (int, bool) {
	for _, p := range r.table.Load().Partitions {
		if partName(p.Number) == name {
			return p.Number, true
		}
	}
	return 0, false
}

// part returns partition n of the current table.
func (r *root) part(n int) (Partition, bool) {
	for _, p := range r.table.Load().Partitions {
		if p.Number == n {
			return p, true
		}
	}
	return Partition{}, false
}

func (r *root) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.dirAttr(&out.Attr)
	out.Nlink = 2
	return 0
}

func (r *root) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	size := uint64(r.disk.Size())
	out.Bsize, out.Frsize = 4096, 4096
	out.Blocks = size / 4096
	used := uint64(r.blocks.get(r, 0, r.disk.Size())) / 4096
	out.Bfree = out.Blocks - min(used, out.Blocks)
	out.Bavail = out.Bfree
	out.NameLen = 255
	return 0
}

// fsDir is fs/: one empty folder per partition, mount points for the
// filesystems inside.
type fsDir struct {
	fs.Inode
	root *root
}

func (d *fsDir) subdirs() []fuse.DirEntry {
	parts := d.root.table.Load().Partitions
	if len(parts) == 0 {
		return []fuse.DirEntry{{Name: "disk", Ino: inoFSSub, Mode: syscall.S_IFDIR}}
	}
	var list []fuse.DirEntry
	for _, p := range parts {
		list = append(list, fuse.DirEntry{Name: partName(p.Number), Ino: inoFSSub + uint64(p.Number), Mode: syscall.S_IFDIR})
	}
	return list
}

func (d *fsDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return fs.NewListDirStream(d.subdirs()), 0
}

func (d *fsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	for _, e := range d.subdirs() {
		if e.Name == name {
			d.root.dirAttr(&out.Attr)
			return d.NewInode(ctx, &emptyDir{root: d.root}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: e.Ino}), 0
		}
	}
	return nil, syscall.ENOENT
}

func (d *fsDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.root.dirAttr(&out.Attr)
	return 0
}

type emptyDir struct {
	fs.Inode
	root *root
}

func (d *emptyDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.root.dirAttr(&out.Attr)
	return 0
}

// infoNode is info.json: Options.Info and the partition table.
type infoNode struct {
	fs.Inode
	root *root
}

func (n *infoNode) content() []byte {
	b, err := json.MarshalIndent(struct {
		Info  any    `json:"mount,omitempty"`
		Size  int64  `json:"size"`
		Mode  string `json:"mode"`
		Table *Table `json:"partition_table"`
	}{n.root.opts.Info, n.root.disk.Size(), modeName(n.root.readOnly), n.root.table.Load()}, "", "  ")
	if err != nil {
		return []byte(fmt.Sprintf("{\"error\": %q}\n", err.Error()))
	}
	return append(b, '\n')
}

func modeName(ro bool) string {
	if ro {
		return "read-only"
	}
	return "read-write"
}

func (n *infoNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | n.root.perms.info
	n.root.stamp(&out.Attr)
	out.Nlink = 1
	out.Size = uint64(len(n.content()))
	return 0
}

func (n *infoNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	// direct_io: the size changes with the table; never serve a stale
	// cached copy.
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (n *infoNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	b := n.content()
	if off >= int64(len(b)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(b[off:min(int64(len(b)), off+int64(len(dest)))]), 0
}

// errno maps a disk error to the errno a program expects.
func errno(err error) syscall.Errno {
	var e syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.Is(err, engine.ErrReadOnly):
		return syscall.EROFS
	case errors.Is(err, engine.ErrOutOfRange):
		return syscall.ENOSPC
	case errors.Is(err, engine.ErrClosed):
		return syscall.EBADF
	case errors.As(err, &e):
		return e
	}
	return syscall.EIO
}
