package engine

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// sparse is the layout of dynamic and differencing images: a BAT maps
// each block of the disk to a bitmap and data in the file, or to nothing.
type sparse struct {
	img *Image
	// lost is set in a salvage open: what it could not read, and
	// salvageEnd where the file's data ends (salvage.go).
	lost         *LostReport
	salvageEnd   int64
	f            File
	hdr          DynamicHeader
	hdrOff       int64
	differencing bool
	size         int64 // virtual size
	blockSize    int64
	blockShift   uint
	bitmapSize   int64
	tableOff     int64
	reserved     []span // footer copy, header, BAT, parent locator data
	// reservedEnd is where the furthest reserved span ends. A locator's
	// data space may run past the end of the file; new blocks go after
	// it, never into it.
	reservedEnd int64

	// bat is the table in memory, read and written with sync/atomic so
	// reads take no lock. Entries change only under the block's stripe
	// lock.
	bat []uint32
	// full has a bit per block, set (atomically) once every sector of the
	// block is known to be present, so writes to it need no bitmap work.
	full []atomic.Uint64

	// stripes serialize bitmap changes and allocation per block.
	stripes [64]sync.Mutex
	// recent is a direct-mapped cache in front of bitmaps: slot b%len
	// holds the bitmap block b last loaded or made, so that reads of
	// blocks that are not full find it without a lock (presentFast).
	// Its length is a power of two and a multiple of len(stripes), so a
	// slot's blocks share a stripe; slots are stored only under that
	// stripe's lock. Every bitmap object is made under its block's
	// stripe lock and stored here, so one found here for its block and
	// BAT entry is the block's current bitmap, even if the cache has
	// evicted it since.
	recent []atomic.Pointer[bitmap]
	// partShift is log2 of the sectors in each 64th of a block: the
	// granularity of a bitmap's summary (bitmap.present).
	partShift uint

	allocMu sync.Mutex
	// footerOff is where the footer at the end of the file sits; new
	// blocks go after it. Guarded by allocMu.
	footerOff int64

	metaMu sync.Mutex
	// bitmaps caches sector bitmaps of allocated blocks; dirty ones stay
	// until a flush writes them. Guarded by metaMu; an entry's bits are
	// guarded by its block's stripe lock.
	bitmaps     map[uint32]*bitmap
	bitmapBytes int64
	// dirtyBitmaps and dirtyBAT (BAT sectors) wait for the next flush.
	// Guarded by metaMu.
	dirtyBitmaps map[uint32]struct{}
	dirtyBAT     map[int64]struct{}
	// flushing holds the blocks whose bitmaps a running flush has taken
	// from dirtyBitmaps but not yet written: no longer dirty, yet not in
	// the file either, so they must not be evicted (a reload would read
	// the old bits back). Guarded by metaMu.
	flushing map[uint32]struct{}

	// dataDirty is set after every write to the file returns, and
	// cleared by a flush before it syncs. Never set before the write: see
	// writeBlock.
	dataDirty atomic.Bool
	// flushMu lets one flush run at a time.
	flushMu sync.Mutex
	// failed holds the error that left the image unwritable: after a
	// failed sync nothing is known about what reached the disk.
	failed atomic.Pointer[error]

	// parent reads the sectors a differencing image does not hold.
	parent Disk

	// batmap is blktap's batmap, in images blktap keeps one in; nil in
	// others (batmap_image.go).
	batmap *batmapState
}

// bitmap is one block's sector bitmap: a set bit means the image holds
// that sector. Fields are guarded by the block's stripe lock.
type bitmap struct {
	bits  []byte
	block uint32 // the block it belongs to
	entry uint32 // the BAT entry it was read for
	// present has bit k set when every sector of the k-th 64th of the
	// block is present (bitmap_read.go). Stored under the stripe lock,
	// loaded without it.
	present atomic.Uint64
}

// Variables, not constants, only so tests can make them small.
var (
	// maxCachedBitmapBytes bounds the clean bitmaps kept in memory.
	maxCachedBitmapBytes int64 = 8 << 20
	// maxDirtyBitmaps bounds how many bitmaps wait for a flush; past it a
	// write flushes first. 8192 bitmaps cover 16 GiB of 2 MiB blocks.
	maxDirtyBitmaps = 8192
)

// maxRecentBitmaps bounds the slots of sparse.recent: 8 KiB of pointers,
// covering 2 GiB of 2 MiB blocks without a lookup in the shared cache. A
// power of two of at least 64; a variable only so tests can make it
// small.
var maxRecentBitmaps = 1024

// partShift is log2 of the sectors in a 64th of a block of blockSize
// bytes (at least one sector).
func partShift(blockSize int64) uint {
	var k uint
	for blockSize/SectorSize>>k > 64 {
		k++
	}
	return k
}

// recentSlots is the length of sparse.recent for a BAT of n entries: a
// power of two from 64 (the stripes) to maxRecentBitmaps.
func recentSlots(n int) int {
	k := 64
	for k < n && k < maxRecentBitmaps {
		k *= 2
	}
	return k
}

const (
	// dataAlign is the file alignment of new blocks' data, so guests'
	// 4 KiB I/O lands on host pages.
	dataAlign = 4096
)

func openSparse(img *Image, fileSize int64) (*sparse, error) {
	s, err := parseSparse(img, fileSize)
	if err != nil {
		return nil, err
	}
	if s.lost != nil {
		s.salvageBAT(fileSize)
		return s, nil
	}
	if errs := batProblems(s.bat, s.tableOff, s.bitmapSize+s.blockSize, img.dataLimit(fileSize), s.reserved, 1); len(errs) > 0 {
		return nil, errs[0]
	}
	return s, nil
}

// parseSparse reads the dynamic header and the BAT, validating all but
// where the blocks lie (see batProblems).
func parseSparse(img *Image, fileSize int64) (*sparse, error) {
	hdrOff := int64(img.footer.DataOffset)
	// Compared unsigned, as read: a data offset of 2^63 or more is
	// negative as an int64 and used to pass, so the header was read at a
	// negative offset and the damage surfaced as an I/O error (and Check
	// failed instead of reporting it).
	if limit := img.dataLimit(fileSize); img.footer.DataOffset > uint64(limit) || limit-hdrOff < HeaderSize {
		return nil, corrupt("footer", "data offset", offFooterDataOffset, "dynamic header at %#x does not fit in the file (%d bytes)", hdrOff, fileSize)
	}
	var raw [HeaderSize]byte
	if _, err := img.f.ReadAt(raw[:], hdrOff); err != nil {
		return nil, ioError("read dynamic header", hdrOff, err)
	}
	hdr, err := ParseDynamicHeader(raw[:], hdrOff)
	if err != nil {
		return nil, err
	}
	s := &sparse{
		img: img, f: img.f, hdr: hdr, hdrOff: hdrOff,
		differencing: img.footer.DiskType == TypeDifferencing,
		size:         int64(img.footer.CurrentSize),
		blockSize:    int64(hdr.BlockSize),
		bitmapSize:   bitmapBytes(hdr.BlockSize),
		tableOff:     int64(hdr.TableOffset),
		footerOff:    fileSize - FooterSize,
		bitmaps:      make(map[uint32]*bitmap),
		dirtyBitmaps: make(map[uint32]struct{}),
		dirtyBAT:     make(map[int64]struct{}),
		flushing:     make(map[uint32]struct{}),
	}
	if img.salvage {
		s.lost = &LostReport{disk: img.Size()}
	}
	for int64(1)<<s.blockShift < s.blockSize {
		s.blockShift++
	}
	if err := s.loadBAT(fileSize); err != nil {
		return nil, err
	}
	if err := s.loadBatmap(fileSize); err != nil {
		return nil, err
	}
	s.setReserved(s.structSpans())
	s.full = make([]atomic.Uint64, (len(s.bat)+63)/64)
	s.recent = make([]atomic.Pointer[bitmap], recentSlots(len(s.bat)))
	s.partShift = partShift(s.blockSize)
	return s, nil
}

// blocks is the number of blocks that cover the disk.
func (s *sparse) blocks() int64 { return (s.size + s.blockSize - 1) >> s.blockShift }

// structSpans lists the structures blocks must not overlap: the footer
// copy, the header, the BAT, blktap's batmap and the parent locators'
// data.
func (s *sparse) structSpans() []span {
	r := []span{
		{0, FooterSize, "footer copy"},
		{s.hdrOff, HeaderSize, "dynamic header"},
		{s.tableOff, batBytes(s.hdr.MaxTableEntries), "BAT"},
	}
	for _, l := range s.hdr.Locators {
		if !l.Empty() {
			r = append(r, span{int64(l.DataOffset), max(l.spaceBytes(), int64(l.DataLength)), "parent locator " + l.CodeString()})
		}
	}
	if s.batmap != nil && s.batmap.found {
		r = append(r, s.batmap.spans()...)
	}
	return r
}

// setReserved records the spans blocks must avoid and where they end.
func (s *sparse) setReserved(r []span) {
	s.reserved = r
	s.reservedEnd = 0
	for _, sp := range r {
		s.reservedEnd = max(s.reservedEnd, sp.end())
	}
}

// reservedSpans is structSpans, after checking each locator against the
// file.
func (s *sparse) reservedSpans(fileSize int64) ([]span, error) {
	for _, l := range s.hdr.Locators {
		if err := l.validate(s.img.dataLimit(fileSize)); err != nil {
			return nil, err
		}
	}
	return s.structSpans(), nil
}

// loadBAT reads and validates the entries that cover the disk. The
// table's size comes from the header, so it is checked against the
// file's size first; then it is read so that memory follows what the
// file holds, not what it claims (bat_read.go).
func (s *sparse) loadBAT(fileSize int64) error {
	n := s.blocks()
	if int64(s.hdr.MaxTableEntries) < n {
		return corrupt("dynamic header", "max table entries", s.hdrOff+offHdrMaxEntries, "%d entries of %d bytes cannot cover a disk of %d bytes (%d needed)", s.hdr.MaxTableEntries, s.blockSize, s.size, n)
	}
	// The table must end before the footer, and all of it, as long as
	// max table entries makes it: that space is reserved, blocks must
	// not overlap it. Checking only the entries the disk needs, against
	// the whole file, let a table offset in the footer's sector pass
	// (the footer's bytes became BAT entries), and a huge entry count
	// pass too: every block then "overlapped the BAT", and with no block
	// allocated the image opened with a BAT span of up to 16 GiB, which
	// a tail repair would have written its footer past.
	limit := s.img.dataLimit(fileSize)
	if s.tableOff > limit || 4*n > limit-s.tableOff {
		return corrupt("dynamic header", "table offset", s.hdrOff+offHdrTableOffset, "BAT at %#x with %d entries runs past the end of the data area (%#x)", s.tableOff, n, limit)
	}
	if batBytes(s.hdr.MaxTableEntries) > limit-s.tableOff {
		return corrupt("dynamic header", "max table entries", s.hdrOff+offHdrMaxEntries, "a BAT of %d entries at %#x runs past the end of the data area (%#x)", s.hdr.MaxTableEntries, s.tableOff, limit)
	}
	reserved, err := s.reservedSpans(fileSize)
	if err != nil {
		return err
	}
	s.setReserved(reserved)
	var onZero func(int64)
	if s.lost != nil {
		onZero = s.zeroEntryLost
	}
	s.bat, err = readBAT(s.f, s.tableOff, n, onZero)
	return err
}

func (s *sparse) entry(b int64) uint32 { return atomic.LoadUint32(&s.bat[b]) }

func (s *sparse) isFull(b int64) bool {
	return s.full[b/64].Load()&(1<<(b%64)) != 0
}

func (s *sparse) setFull(b int64, on bool) {
	w := &s.full[b/64]
	bit := uint64(1) << (b % 64)
	for {
		old := w.Load()
		nw := old &^ bit
		if on {
			nw = old | bit
		}
		if old == nw || w.CompareAndSwap(old, nw) {
			return
		}
	}
}

func (s *sparse) stripe(b int64) *sync.Mutex { return &s.stripes[b%int64(len(s.stripes))] }

// dataOff is the file offset of the data of the block at BAT entry e.
func (s *sparse) dataOff(e uint32) int64 { return int64(e)*SectorSize + s.bitmapSize }

// sectorsIn is how many sectors of block b lie inside the disk.
func (s *sparse) sectorsIn(b int64) int64 {
	return min(s.blockSize, s.size-b<<s.blockShift) / SectorSize
}

func (s *sparse) allocatedBlocks() int64 {
	var n int64
	for i := range s.bat {
		if s.entry(int64(i)) != batUnused {
			n++
		}
	}
	return n
}

// forBlocks splits [off, off+n) at block boundaries.
func (s *sparse) forBlocks(off, n int64, fn func(b, inOff, l int64) error) error {
	for n > 0 {
		b := off >> s.blockShift
		in := off & (s.blockSize - 1)
		l := min(n, s.blockSize-in)
		if err := fn(b, in, l); err != nil {
			return err
		}
		off += l
		n -= l
	}
	return nil
}

// readAt reads the disk. A sector whose bitmap bit is clear reads as
// absent (zeros, or the parent's data) whatever the file holds there:
// the bit is the sector's commit record. A flush writes it only after
// the sector's data is synced, so data under a clear bit is a write that
// never reached a flush, which a crash may leave behind (a dynamic image
// read without its bitmap once showed it, while Extents, and so convert
// and NBD block status, said zeros). Only blocks whose every sector is
// present (full) are read without the bitmap.
func (s *sparse) readAt(p []byte, off int64) error {
	return s.forBlocks(off, int64(len(p)), func(b, in, l int64) error {
		buf := p[:l]
		p = p[l:]
		e := s.entry(b)
		switch {
		case e == batUnused:
			return s.readAbsent(buf, b<<s.blockShift+in)
		case s.isFull(b) || s.presentFast(b, e, in, l):
			return s.pread(buf, s.dataOff(e)+in)
		}
		return s.readPartial(buf, b, e, in, s.readAbsent)
	})
}

func (s *sparse) pread(p []byte, off int64) error {
	if _, err := s.f.ReadAt(p, off); err != nil {
		if errors.Is(err, io.EOF) {
			return corrupt("file", "", off, "block data past the end of the file (truncated while open?)")
		}
		return ioError("read", off, err)
	}
	return nil
}

// readAbsent fills p with what the disk holds at off where this image
// stores nothing: zeros, or the parent's data, and zeros past the end of
// a parent smaller than the child (Xen's vhd-util resize grows a leaf
// over its parent; blktap reads such chains so).
func (s *sparse) readAbsent(p []byte, off int64) error {
	if !s.differencing {
		clear(p)
		return nil
	}
	if s.parent == nil {
		return fmt.Errorf("%s: %w", s.img.name, ErrNoParent)
	}
	n, err := s.parent.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return nil
	}
	return err
}

// readPartial reads [in, in+len(p)) of block b, which is not full, run
// by run of its bitmap: present runs from the file, absent ones through
// absent (given the disk offset).
func (s *sparse) readPartial(p []byte, b int64, e uint32, in int64, absent func(p []byte, off int64) error) error {
	var small [64]byte // the bits of up to 256 KiB, without allocating
	first, last := in/SectorSize, (in+int64(len(p))-1)/SectorSize
	bits, base, all, err := s.bitRange(b, e, first, last+1, small[:0])
	diskOff := b << s.blockShift
	switch {
	case err != nil:
		return err
	case all == allPresent:
		return s.pread(p, s.dataOff(e)+in)
	case all == allAbsent:
		return absent(p, diskOff+in)
	}
	for len(p) > 0 {
		sec := in/SectorSize - base
		present := bitSet(bits, sec)
		run := (runEnd(bits, sec, last+1-base, present) + base) * SectorSize
		l := min(run-in, int64(len(p)))
		if present {
			err = s.pread(p[:l], s.dataOff(e)+in)
		} else {
			err = absent(p[:l], diskOff+in)
		}
		if err != nil {
			return err
		}
		p = p[l:]
		in += l
	}
	return nil
}

// readStored reads what this image itself stores: its present sectors,
// and zeros where it holds nothing (unallocated blocks, sectors whose
// bitmap bit is clear), never the parent. A chain that knows which layer
// holds a sector reads it this way, at a cost that does not grow with
// the chain's depth.
func (s *sparse) readStored(p []byte, off int64) error {
	return s.forBlocks(off, int64(len(p)), func(b, in, l int64) error {
		buf := p[:l]
		p = p[l:]
		e := s.entry(b)
		switch {
		case e == batUnused:
			clear(buf)
			return nil
		case s.isFull(b) || s.presentFast(b, e, in, l):
			return s.pread(buf, s.dataOff(e)+in)
		}
		return s.readPartial(buf, b, e, in, zeroFill)
	})
}

// zeroFill is readPartial's absent for reads of what an image stores.
func zeroFill(p []byte, _ int64) error {
	clear(p)
	return nil
}

// ReadStored reads [off, off+len(p)) from what the image itself stores,
// never from a parent: zeros where it holds nothing. p must lie inside
// the disk.
func (img *Image) ReadStored(p []byte, off int64) error {
	if img.closed.Load() {
		return ErrClosed
	}
	if err := checkRange(off, int64(len(p)), img.Size()); err != nil {
		return err
	}
	if img.sparse == nil {
		return img.lay.readAt(p, off)
	}
	return img.sparse.readStored(p, off)
}

// SetParent gives a differencing image the disk its absent sectors are
// read from. The chains package opens and validates the parent. The
// parent's Extents must describe the whole chain below (ExtentData where
// any ancestor holds data): zero writes are elided, and whole zeroed
// blocks freed, only where it reports none. Call before any I/O.
func (img *Image) SetParent(d Disk) {
	if img.sparse != nil {
		img.sparse.parent = d
	}
}
