// Package engine reads and writes Microsoft VHD images: fixed, dynamic
// and differencing. An open image is a Disk.
//
// # Layout of this package
//
// Each on-disk structure has one file that draws its layout and holds a
// pure parser for it (footer.go, header.go, locator.go, bat.go). image.go
// opens and validates a file; fixed.go and sparse*.go implement the two
// ways data is laid out; check.go and repair.go are `vhd check` and
// `vhd repair`. All I/O goes through the File interface (file.go).
//
// # Durability
//
// WriteAt puts data in the host's page cache. Flush makes every write
// acknowledged before it durable: for dynamic and differencing images it
// first syncs the data (and the space of new blocks), then writes the
// metadata that points at it (sector bitmaps, BAT), then syncs again. No
// metadata is written between flushes, so a BAT entry or bitmap bit on
// disk never claims data that was not yet durable. The footer changes
// only its timestamp, once, at the first flush that writes data (it says
// when the image was last modified, which differencing children check).
// A new block moves the footer to the new end of the file, past the old
// one, and if power fails before that footer is durable the copy at
// offset 0 stands in (see allocate in sparse_write.go). Close, after its
// flush, cuts off space that deallocated blocks left at the end of the
// file (trimTail). Metadata changes (parent link, size, UUID) are written
// into free space and committed by the footer (relocate.go, setuuid.go).
//
// The tests that hold the engine to this are crash_test.go (power loss
// simulated by package crashfile at every Sync and many WriteAts),
// crash_flush_test.go (exact interleavings around Flush, failed syncs),
// crash_kill_test.go (a writer process killed), crash_relocate_test.go
// (power loss during set-parent and resize), crash_setuuid_test.go (a
// new UUID) and concurrency_test.go.
//
// # Errors
//
// Errors that mean the image is damaged match ErrCorrupt and are
// *CorruptError values naming the structure, field and file offset. A
// file that positively holds another format (Detect: a qcow2, a VMDK, a
// compressed file, a partitioned raw disk) is not a damaged VHD: opening,
// checking or repairing it gives a *FormatError (ErrOtherFormat) naming
// the format. A path that names a FIFO, socket, character device or
// folder gives a *FileKindError (ErrNotFile). Other errors are I/O
// failures of the file.
//
// # Concurrency
//
// An Image is safe for concurrent use. Reads never take a lock on a
// dynamic image; writes to a block whose sectors are all present in the
// image take none either; other writes lock only their block's stripe.
package engine

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Options control how an image is opened.
type Options struct {
	// ReadOnly opens the image without write access.
	ReadOnly bool
	// NoLock skips the OS file lock, so an image another process holds
	// for writing can still be inspected (what qemu-img -U does). Data
	// read that way may be inconsistent.
	NoLock bool
	// Logger receives notices (a footer repaired, ...). Silent if nil.
	Logger *slog.Logger
	// Salvage opens a damaged image to copy what can still be read
	// (salvage.go): read-only; blocks past the end of the file or over
	// other blocks read as never written; Image.Lost lists them.
	Salvage bool
}

// Image is one open VHD file. It implements Disk.
type Image struct {
	f        File
	name     string
	readOnly bool
	salvage  bool
	log      *slog.Logger
	unlock   func()
	// share turns the OS lock into a shared one (Freeze); a no-op when
	// the image holds none.
	share func() error

	// footerMu guards footer: its timestamp changes at the first flush
	// that writes data (see stampFooter).
	footerMu sync.Mutex
	footer   Footer
	// stamped is set once this open has stamped the footer.
	stamped atomic.Bool
	// footerFromCopy is set when the footer at the end of the file was
	// unusable and the copy at offset 0 was used instead.
	footerFromCopy bool

	lay    layout
	sparse *sparse // nil for fixed images
	// raw is set for a raw disk opened as a parent (rawparent.go).
	raw bool

	closed atomic.Bool
}

// layout is how an image maps the disk onto its file. Offsets reaching it
// are in range; writeAt and zero get whole sectors.
type layout interface {
	readAt(p []byte, off int64) error
	writeAt(p []byte, off int64) error
	zero(off, n int64, mode ZeroMode) error
	trim(off, n int64) error
	extents(off, n int64) ([]Extent, error)
	flush() error
}

var _ Disk = (*Image)(nil)

// Open opens the VHD at path, taking an OS lock: exclusive for writing,
// shared for reading. The path must name a regular file or a block
// device (a VHD in a logical volume, as XenServer keeps them); anything
// else is refused at once (OpenChecked).
func Open(path string, opts Options) (*Image, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	osf, err := OpenChecked(path, flag, true)
	if err != nil {
		return nil, err
	}
	return OpenOS(osf, path, opts)
}

// OpenOS opens the image in an already open file (which the caller may
// have checked first: the chains package opens parents this way, so the
// file it vetted is the file it reads), taking the OS lock as Open does.
// The image owns osf from then on; on error osf is closed.
func OpenOS(osf *os.File, path string, opts Options) (*Image, error) {
	var err error
	unlock := func() {}
	if !opts.NoLock {
		if unlock, err = lockFile(osf, path, !opts.ReadOnly); err != nil {
			osf.Close()
			return nil, err
		}
	}
	img, err := OpenFile(OSFile(osf), path, opts)
	if err != nil {
		unlock()
		osf.Close()
		return nil, err
	}
	img.unlock = unlock
	if !opts.NoLock {
		img.share = shareLock(osf, path)
	}
	return img, nil
}

// OpenFile opens the image held by f; name is used in messages. The image
// owns f from then on, unless an error is returned.
func OpenFile(f File, name string, opts Options) (*Image, error) {
	if err := checkSalvage(opts); err != nil {
		return nil, err
	}
	img := &Image{f: f, name: name, readOnly: opts.ReadOnly, salvage: opts.Salvage, log: opts.Logger, unlock: func() {}, share: func() error { return nil }}
	if img.log == nil {
		img.log = slog.New(slog.DiscardHandler)
	}
	size, err := f.Size()
	if err != nil {
		return nil, ioError("stat", 0, err)
	}
	if err := img.readFooter(size); err != nil {
		if ferr := otherFormat(f, name, err); ferr != nil {
			return nil, ferr // a qcow2 is not a damaged VHD: no repair advice
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	switch img.footer.DiskType {
	case TypeFixed:
		img.lay, err = openFixed(img, size)
	default:
		if img.salvage {
			img.f = zeroPastEOF{img.f} // salvage.go: blocks cut by the end keep their start
		}
		img.sparse, err = openSparse(img, size)
		img.lay = img.sparse
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if img.footerFromCopy && !img.readOnly {
		if err := img.rewriteFooter(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if img.sparse != nil && !img.readOnly {
		if err := img.sparse.healBatmap(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return img, nil
}

// readFooter finds the footer: the last 512 bytes, else the last 511 (old
// Virtual PC), else the copy at offset 0 that dynamic images carry.
func (img *Image) readFooter(size int64) error {
	if size < FooterSize {
		return corrupt("file", "", -1, "is %d bytes, too short to hold a VHD footer", size)
	}
	var buf [FooterSize]byte
	if _, err := img.f.ReadAt(buf[:], size-FooterSize); err != nil {
		return ioError("read footer", size-FooterSize, err)
	}
	tail := buf
	f, errEOF := ParseFooter(buf[:], size-FooterSize)
	if errEOF == nil {
		if errEOF = img.strayFooter(f, size); errEOF == nil {
			img.footer = f
			return nil
		}
	}
	if f511, err := ParseFooter(buf[1:], size-footerSize511); err == nil && f511.DiskType == TypeFixed {
		img.footer = f511
		return nil
	}
	if _, err := img.f.ReadAt(buf[:], 0); err != nil {
		return ioError("read footer copy", 0, err)
	}
	c, errCopy := ParseFooter(buf[:], 0)
	if errCopy != nil || c.DiskType == TypeFixed {
		if noCookie(buf[:]) && noCookie(tail[:]) && noCookie(tail[1:]) {
			return noFooter()
		}
		// Report the footer at the end: it is the one every image has.
		return errEOF
	}
	img.footer = c
	img.footerFromCopy = true
	if img.readOnly {
		img.log.Warn("footer at end of file is damaged; using the copy at offset 0 (vhd repair writes it back)", "image", img.name, "error", errEOF)
	}
	return nil
}

// dataLimit is where the data area of an image file of fileSize bytes
// ends: before the footer at the end, or at the end of the file when that
// footer was unusable and the copy at offset 0 is in use. The footer is
// the last thing in the file, so a file truncated by up to 512 bytes has
// lost only its footer and still holds every block whole; counting the
// footer's 512 bytes anyway made those blocks "run past the data area",
// and an image the spec says to open from its footer copy was refused.
func (img *Image) dataLimit(fileSize int64) int64 {
	if img.footerFromCopy {
		return fileSize
	}
	return fileSize - FooterSize
}

// strayFooter reports a valid footer at the end of the file that is not
// this image's. A new block's data is written before the footer that
// follows it is durable, so a crash can leave the file ending in the
// block's last sector; if the guest wrote a VHD footer there (a VHD
// stored inside the disk), it parses. When the copy at offset 0 is a
// dynamic or differencing footer and the one at the end names another
// disk (type, size or UUID), the end is disk data and the copy stands
// in. A fixed image whose file length fits its footer keeps it: offset
// 0 of a fixed image is disk data, which may be anything.
func (img *Image) strayFooter(f Footer, size int64) error {
	if f.DiskType == TypeFixed && int64(f.CurrentSize)+FooterSize == size {
		return nil
	}
	var buf [FooterSize]byte
	if _, err := img.f.ReadAt(buf[:], 0); err != nil {
		return nil // readFooter's fallback reports it, if it comes to that
	}
	c, err := ParseFooter(buf[:], 0)
	if err != nil || c.DiskType == TypeFixed {
		return nil
	}
	if c.DiskType != f.DiskType || c.CurrentSize != f.CurrentSize || c.UUID != f.UUID {
		return corrupt("footer", "", size-FooterSize, "describes a %s disk of %d bytes (UUID %s), but the copy at offset 0 a %s disk of %d bytes (UUID %s): disk data left at the end of the file by a crash?",
			f.DiskType, f.CurrentSize, f.UUID, c.DiskType, c.CurrentSize, c.UUID)
	}
	return nil
}

// Name is the name the image was opened under.
func (img *Image) Name() string { return img.name }

// Footer returns the image's footer.
func (img *Image) Footer() Footer {
	img.footerMu.Lock()
	defer img.footerMu.Unlock()
	return img.footer
}

// footerBytes encodes the footer as it stands.
func (img *Image) footerBytes() [FooterSize]byte {
	img.footerMu.Lock()
	defer img.footerMu.Unlock()
	return img.footer.Marshal()
}

// stampFooter sets the footer's timestamp to now (and at least one second
// past the old one) the first time it is called on this open, and returns
// the new footer to write; ok is false afterwards. A flush that writes
// data calls it, so an image's timestamp says when it was last modified,
// which is what a differencing child records of its parent: a parent
// changed after its child was made no longer matches (see chains).
func (img *Image) stampFooter() (raw [FooterSize]byte, ok bool) {
	if img.stamped.Swap(true) {
		return raw, false
	}
	img.footerMu.Lock()
	defer img.footerMu.Unlock()
	img.footer.Timestamp = max(TimestampOf(time.Now()), img.footer.Timestamp+1)
	return img.footer.Marshal(), true
}

// Type is the disk type.
func (img *Image) Type() DiskType { return img.footer.DiskType }

// FooterFromCopy reports that the footer at the end of the file was bad
// and the copy at offset 0 is in use (and, on a writable image, has been
// written back).
func (img *Image) FooterFromCopy() bool { return img.footerFromCopy }

// Header returns the dynamic header, or nil for a fixed image.
func (img *Image) Header() *DynamicHeader {
	if img.sparse == nil {
		return nil
	}
	h := img.sparse.hdr
	return &h
}

// BlockSize is the block size of a dynamic or differencing image, 0 for
// a fixed one.
func (img *Image) BlockSize() int64 {
	if img.sparse == nil {
		return 0
	}
	return img.sparse.blockSize
}

// AllocatedBytes is how much of the disk the image stores: allocated
// blocks times the block size, or the whole disk for a fixed image.
func (img *Image) AllocatedBytes() int64 {
	if img.sparse == nil {
		return img.Size()
	}
	return img.sparse.allocatedBlocks() * img.sparse.blockSize
}

// Size implements Disk. It is the footer's DiskSize: current size, or
// the CHS size for Virtual PC and old QEMU images. The layouts keep
// validating the BAT and file length against current size, which is
// never smaller.
func (img *Image) Size() int64 { return img.footer.DiskSize() }

// ReadOnly implements Disk.
func (img *Image) ReadOnly() bool { return img.readOnly }

// ReadAt implements Disk.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	if img.closed.Load() {
		return 0, ErrClosed
	}
	size := img.Size()
	if off < 0 {
		return 0, ErrOutOfRange
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := len(p)
	var eof error
	if int64(n) > size-off {
		n, eof = int(size-off), io.EOF
	}
	if err := img.lay.readAt(p[:n], off); err != nil {
		return 0, err
	}
	return n, eof
}

// WriteAt implements Disk.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if err := img.writable(off, int64(len(p))); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off%SectorSize == 0 && len(p)%SectorSize == 0 {
		if err := img.lay.writeAt(p, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if err := img.writeUnaligned(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeUnaligned widens a write to whole sectors, reading the sectors it
// only partly covers. Two unaligned writes racing on one sector may lose
// one's bytes, as they may on any disk.
func (img *Image) writeUnaligned(p []byte, off int64) error {
	start := off / SectorSize * SectorSize
	end := alignUp(off+int64(len(p)), SectorSize)
	buf := make([]byte, end-start)
	if err := img.lay.readAt(buf[:SectorSize], start); err != nil {
		return err
	}
	if end-SectorSize > start {
		if err := img.lay.readAt(buf[len(buf)-SectorSize:], end-SectorSize); err != nil {
			return err
		}
	}
	copy(buf[off-start:], p)
	return img.lay.writeAt(buf, start)
}

// Zero implements Disk.
func (img *Image) Zero(off, n int64, mode ZeroMode) error {
	if err := img.writable(off, n); err != nil {
		return err
	}
	return img.edges(off, n, func(o, l int64) error { return img.lay.zero(o, l, mode) })
}

// Trim implements Disk.
func (img *Image) Trim(off, n int64) error {
	if err := img.writable(off, n); err != nil {
		return err
	}
	return img.edges(off, n, img.lay.trim)
}

// edges zeros the partial sectors at either end of [off, off+n) with
// writes and hands the whole sectors between to whole.
func (img *Image) edges(off, n int64, whole func(off, n int64) error) error {
	end := off + n
	inStart := alignUp(off, SectorSize)
	inEnd := end / SectorSize * SectorSize
	if inStart >= inEnd {
		return img.writeZeroBytes(off, n)
	}
	if err := img.writeZeroBytes(off, inStart-off); err != nil {
		return err
	}
	if err := img.writeZeroBytes(inEnd, end-inEnd); err != nil {
		return err
	}
	return whole(inStart, inEnd-inStart)
}

func (img *Image) writeZeroBytes(off, n int64) error {
	if n == 0 {
		return nil
	}
	return img.writeUnaligned(make([]byte, n), off)
}

func (img *Image) writable(off, n int64) error {
	if img.closed.Load() {
		return ErrClosed
	}
	if img.readOnly {
		return ErrReadOnly
	}
	return checkRange(off, n, img.Size())
}

// Extents implements Disk.
func (img *Image) Extents(off, n int64) ([]Extent, error) {
	if img.closed.Load() {
		return nil, ErrClosed
	}
	if err := checkRange(off, n, img.Size()); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	return img.lay.extents(off, n)
}

// Flush implements Disk.
func (img *Image) Flush() error {
	if img.closed.Load() {
		return ErrClosed
	}
	if img.readOnly {
		return nil
	}
	return img.lay.flush()
}

// Close flushes a writable image and releases the file and its lock.
func (img *Image) Close() error {
	if img.closed.Swap(true) {
		return ErrClosed
	}
	var err error
	if !img.readOnly {
		err = img.lay.flush()
		if err == nil && img.sparse != nil {
			err = img.sparse.trimTail()
		}
	}
	img.unlock()
	if cerr := img.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// rewriteFooter puts the footer back at the end of a dynamic image whose
// end-of-file footer was damaged (see sparse.repairTail).
func (img *Image) rewriteFooter() error {
	img.log.Warn("footer at end of file was damaged; rewrote it from the copy at offset 0", "image", img.name)
	return img.sparse.rewriteTail()
}

// noCookie reports whether b does not start with the footer cookie.
func noCookie(b []byte) bool { return !bytes.HasPrefix(b, []byte(footerCookie)) }
