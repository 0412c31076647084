package nbdserve

import (
	"errors"
	"fmt"
	"io"

	"vhdkit/engine"
)

const (
	// minHoleChunk is the smallest zero run a READ sends as a hole
	// chunk; shorter runs go as data, so replies stay a few chunks.
	minHoleChunk = 4096
)

// flagsFor lists the command flags valid for each command. FUA is
// accepted everywhere (the spec says so, and clients set it on reads).
var flagsFor = map[uint16]uint16{
	cmdRead:        cmdFlagFUA | cmdFlagDF,
	cmdWrite:       cmdFlagFUA,
	cmdFlush:       cmdFlagFUA,
	cmdTrim:        cmdFlagFUA,
	cmdCache:       cmdFlagFUA,
	cmdWriteZeroes: cmdFlagFUA | cmdFlagNoHole | cmdFlagFastZero,
	cmdBlockStatus: cmdFlagFUA | cmdFlagReqOne,
}

var (
	errBadFlags    = errors.New("unknown or inapplicable command flags")
	errRange       = errors.New("request beyond the end of the export")
	errTooLong     = errors.New("request longer than the maximum block size")
	errNoContext   = errors.New("BLOCK_STATUS without a metadata context (base:allocation, vhdkit:changed)")
	errZeroLength  = errors.New("zero-length BLOCK_STATUS")
	errNotFast     = errors.New("zeroing this range is not faster than writing it")
	errUnknownCmd  = errors.New("unknown command")
	errBadExtents  = errors.New("disk returned extents that do not cover the range")
	errReadOnlyExp = errors.New("export is read-only")
)

// exec runs a request against the disk and returns the NBD error to send
// (0 for success) and its cause.
func (c *conn) exec(r *request) (uint32, error) {
	allowed, known := flagsFor[r.typ]
	if !known {
		return errInval, fmt.Errorf("%w %d", errUnknownCmd, r.typ)
	}
	if r.flags&^allowed != 0 || (r.flags&cmdFlagDF != 0 && !c.structured) {
		return errInval, errBadFlags
	}
	d := c.export.Disk
	size := d.Size()
	off, n := int64(r.off), int64(r.length)
	inRange := r.off <= uint64(size) && n <= size-off
	writes := r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes
	switch {
	case writes && d.ReadOnly():
		return errPerm, errReadOnlyExp
	case r.oversize || (r.typ == cmdCache && r.length > uint32(c.srv.maxPayload())):
		return errInval, errTooLong
	case !inRange && (r.typ == cmdWrite || r.typ == cmdWriteZeroes):
		// The spec asks for ENOSPC on writes past the end.
		return errNoSpc, errRange
	case !inRange:
		return errInval, errRange
	}
	var err error
	switch r.typ {
	case cmdRead:
		return c.read(r, off, n)
	case cmdWrite:
		_, err = d.WriteAt(r.buf, off)
	case cmdFlush:
		err = d.Flush()
	case cmdTrim:
		err = d.Trim(off, n)
	case cmdCache:
		// Reads are served from the host's page cache already; a hint
		// needs no work.
	case cmdWriteZeroes:
		mode := engine.ZeroMayDeallocate
		if r.flags&cmdFlagNoHole != 0 {
			mode = engine.ZeroKeepAllocated
		}
		if r.flags&cmdFlagFastZero != 0 && !c.zeroIsFast(off, n, mode) {
			return errNotSup, errNotFast
		}
		err = d.Zero(off, n, mode)
	case cmdBlockStatus:
		if !c.metaAlloc && !c.metaChanged {
			return errInval, errNoContext
		}
		if n == 0 {
			return errInval, errZeroLength
		}
		err = c.blockStatus(r, off, n)
	}
	if err == nil && writes && r.flags&cmdFlagFUA != 0 {
		// FUA: the reply waits until this request's data is durable.
		err = d.Flush()
	}
	if err != nil {
		return errnoFor(err, writes), err
	}
	return 0, nil
}

// read fills r.buf. With structured replies it asks the disk which parts
// are holes first, reads only the data, and lists the chunks to send.
func (c *conn) read(r *request, off, n int64) (uint32, error) {
	d := c.export.Disk
	r.chunks = r.chunks[:0]
	if n == 0 {
		return 0, nil
	}
	if !c.structured || r.flags&cmdFlagDF != 0 || n < minHoleChunk {
		r.chunks = append(r.chunks, chunk{off: off, n: n})
		return c.readData(r, off, n)
	}
	ext, err := d.Extents(off, n)
	if err != nil {
		return errnoFor(err, false), err
	}
	if !covers(ext, off, n) {
		c.log.Error("nbd: disk extents do not cover the read; sending it as data", "offset", off, "length", n)
		r.chunks = append(r.chunks[:0], chunk{off: off, n: n})
		return c.readData(r, off, n)
	}
	for _, e := range ext {
		hole := c.readsAsZero(e.State) && e.Len >= minHoleChunk
		if k := len(r.chunks); k > 0 && !hole && !r.chunks[k-1].hole {
			r.chunks[k-1].n += e.Len
			continue
		}
		r.chunks = append(r.chunks, chunk{off: e.Off, n: e.Len, hole: hole})
	}
	for _, ch := range r.chunks {
		if ch.hole {
			continue
		}
		if errno, err := c.readData(r, ch.off, ch.n); errno != 0 {
			return errno, err
		}
	}
	return 0, nil
}

// readData reads [off, off+n) into its place in r.buf.
func (c *conn) readData(r *request, off, n int64) (uint32, error) {
	start := off - int64(r.off)
	got, err := c.export.Disk.ReadAt(r.buf[start:start+n], off)
	if err == io.EOF && int64(got) == n {
		err = nil
	}
	if err == nil && int64(got) != n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return errnoFor(err, false), err
	}
	return 0, nil
}

// covers checks that ext tiles [off, off+n) exactly, in order.
func covers(ext []engine.Extent, off, n int64) bool {
	pos := off
	for _, e := range ext {
		if e.Off != pos || e.Len <= 0 || e.Len > off+n-pos {
			return false
		}
		pos += e.Len
	}
	return pos == off+n
}

// holesAreZero tells whether the disk's holes read as zeros. A bare
// differencing image's holes show its parent instead (a whole chain's do
// not: it says so itself).
func holesAreZero(d engine.Disk) bool {
	ps, ok := d.(engine.ParentShower)
	return !ok || !ps.ShowsParent()
}

func (c *conn) readsAsZero(s engine.ExtentState) bool {
	return s == engine.ExtentZero || (s == engine.ExtentHole && holesAreZero(c.export.Disk))
}

// statusFlags maps an extent to base:allocation: holes are HOLE (and
// ZERO where they read as zeros), zero extents ZERO, data neither.
func (c *conn) statusFlags(s engine.ExtentState) uint32 {
	switch s {
	case engine.ExtentZero:
		return stateZero
	case engine.ExtentHole:
		if holesAreZero(c.export.Disk) {
			return stateHole | stateZero
		}
	}
	return 0
}

// zeroIsFast decides NBD_CMD_FLAG_FAST_ZERO: a zero is fast when it
// writes no data, which only the disk can tell (engine.FastZeroer: an
// image, or a chain, whose top knows what the layers below hold). A disk
// that cannot tell, and NO_HOLE, answer ENOTSUP at once, so a client like
// nbdcopy falls back to writing.
func (c *conn) zeroIsFast(off, n int64, mode engine.ZeroMode) bool {
	fz, ok := c.export.Disk.(engine.FastZeroer)
	return ok && fz.ZeroIsFast(off, n, mode)
}
