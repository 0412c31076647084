package nbdserve

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"time"
)

// request is one transmission request and the state of its reply. Pooled.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	off    uint64
	length uint32
	// oversize marks a READ or WRITE longer than the maximum payload; its
	// data (for a WRITE) was skipped.
	oversize bool
	// held is set once the request holds an in-flight slot.
	held bool
	// start is when the header was read (conn.touch), errno the error
	// replied; the export's statistics take both once the reply is sent.
	start time.Duration
	errno uint32

	// buf holds a WRITE's payload or a READ's data; charged is what it
	// took from the connection's share and the server's budget.
	buf     []byte
	charged int64

	// chunks describe a structured READ reply; status and changed are
	// a BLOCK_STATUS reply's base:allocation and vhdkit:changed payloads
	// (status also an error chunk's). All are reused across requests.
	chunks  []chunk
	status  []byte
	changed []byte
	hdrs    []byte
	bufs    [][]byte
}

// chunk is a piece of a structured READ reply: data from buf at
// [off-request offset, +n), or a hole.
type chunk struct {
	off  int64
	n    int64
	hole bool
}

func (r *request) reset() {
	*r = request{chunks: r.chunks[:0], status: r.status[:0], changed: r.changed[:0], hdrs: r.hdrs[:0], bufs: r.bufs[:0]}
}

// transmit reads requests and hands each to a goroutine of its own,
// bounded by the in-flight slots and the buffer budget; replies go out
// in any order. It returns when the client disconnects, sends garbage or
// the server stops, after every request read has been answered.
func (c *conn) transmit() {
	graceful := false
	for {
		r := requestPool.Get().(*request)
		r.reset()
		err := c.readRequest(r)
		if err != nil {
			c.dropRequest(r, err)
			switch {
			case errors.Is(err, errDisc):
				graceful = true
			case c.stopping.Load() && (isTimeout(err) || errors.Is(err, errConnClosing)):
				graceful = true // shutdown, or evicted for a new client
			case errors.Is(err, errConnClosing):
				c.log.Debug("nbd: connection closing", "error", err)
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				c.log.Debug("nbd: client hung up")
			default:
				c.log.Warn("nbd: closing connection", "error", err)
			}
			break
		}
		c.inflight.Add(1)
		if c.inline(r) {
			c.run(r)
		} else {
			c.dispatch(r)
		}
	}
	close(c.work)
	c.inflight.Wait()
	// At shutdown the export is flushed even for a connection closed at
	// the end of the grace period: its requests have left the disk.
	if (graceful || c.stopping.Load()) && !c.export.Disk.ReadOnly() {
		if err := c.export.Disk.Flush(); err != nil {
			c.log.Error("nbd: flush at disconnect failed", "export", c.export.Name, "error", err)
		}
	}
}

var errDisc = errors.New("nbd: client disconnected")

// dropRequest disposes of a request whose reading failed. One that was
// waiting for memory when the server began shutting down is answered
// ESHUTDOWN, as the spec suggests; the connection ends after it.
func (c *conn) dropRequest(r *request, err error) {
	switch {
	case !r.held:
		requestPool.Put(r)
	case errors.Is(err, errConnClosing) && c.stopping.Load():
		c.inflight.Add(1)
		c.buildReply(r, errShutdown)
		c.enqueue(r)
	default:
		c.done(r)
	}
}

// dispatch hands r to an idle worker, starting one if none is idle.
// Workers live as long as the connection, so their stacks are grown once
// and a request costs a channel handoff, not a goroutine start. At most
// MaxInFlight workers exist, as many as requests can be in flight.
//
// The reader claims an idle worker (takes one off idle) before it sends,
// and a worker counts itself idle again only once it has finished its
// request. Counting on the worker's side when it receives let two
// requests sent back to back both count the same worker, not yet woken,
// as idle: the second then waited in the channel behind the first
// however long that took, with no worker started for it.
func (c *conn) dispatch(r *request) {
	if !c.claimIdle() && c.workers < cap(c.slots) {
		c.workers++
		go c.worker() // its first request is this one
	}
	c.work <- r
}

// claimIdle takes one idle worker for a request about to be sent, if
// there is one.
func (c *conn) claimIdle() bool {
	for {
		n := c.idle.Load()
		if n == 0 {
			return false
		}
		if c.idle.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (c *conn) worker() {
	for {
		r, ok := <-c.work
		if !ok {
			return
		}
		c.run(r)
		c.idle.Add(1)
	}
}

// inlineMax is the largest READ or WRITE the reader runs itself.
const inlineMax = 128 << 10

// inline reports whether the reader should run r itself rather than
// hand it to a worker: a small READ or WRITE when no other request is in
// flight and none is waiting in the socket buffer, which is what queue
// depth one looks like. Handing a request to another goroutine (and
// often another thread) costs more than a small request itself. The
// price: a request that arrives while the reader runs one inline waits
// for it, at most one small I/O, and only on an otherwise idle
// connection.
func (c *conn) inline(r *request) bool {
	return (r.typ == cmdRead || r.typ == cmdWrite) && r.length <= inlineMax &&
		c.br.Buffered() == 0 && len(c.slots) == 1 // r holds the one slot taken
}

// readRequest reads one request header, and a WRITE's payload, taking an
// in-flight slot and buffer budget for it. The slot is taken before
// anything else so a full connection stops reading (back-pressure).
func (c *conn) readRequest(r *request) error {
	var h [requestSize]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return err
	}
	if m := binary.BigEndian.Uint32(h[0:]); m != requestMagic {
		return fmt.Errorf("%w: request magic %#x", errHardDisconnect, m)
	}
	r.flags = binary.BigEndian.Uint16(h[4:])
	r.typ = binary.BigEndian.Uint16(h[6:])
	r.handle = binary.BigEndian.Uint64(h[8:])
	r.off = binary.BigEndian.Uint64(h[16:])
	r.length = binary.BigEndian.Uint32(h[24:])
	if r.typ == cmdDisc {
		return errDisc
	}
	r.start = c.touch()
	c.slots <- struct{}{}
	r.held = true
	max := uint32(c.srv.maxPayload())
	switch r.typ {
	case cmdWrite:
		if r.length > max {
			r.oversize = true
			return c.discard(int64(r.length))
		}
		if !c.charge(r) {
			return errConnClosing
		}
		return c.readPayload(r.buf)
	case cmdRead:
		if r.length > max {
			r.oversize = true
			return nil
		}
		if !c.charge(r) {
			return errConnClosing
		}
	}
	return nil
}

// charge takes a buffer of the request's length from the connection's
// share and the server's budget, waiting (and so not reading from this
// client) until both have room. It fails, holding nothing, only when
// the connection is being closed.
func (c *conn) charge(r *request) bool {
	n := int64(r.length)
	if n > 0 {
		if !c.share.acquire(n, c.quit) {
			return false
		}
		if !c.srv.memory().acquire(n, c.quit) {
			c.share.release(n)
			return false
		}
		r.charged = n
	}
	r.buf = getBuf(int(n))
	return true
}

// freeBuf gives back the request's buffer and its budget.
func (c *conn) freeBuf(r *request) {
	if r.buf != nil {
		putBuf(r.buf)
		r.buf = nil
	}
	if r.charged > 0 {
		c.srv.memory().release(r.charged)
		c.share.release(r.charged)
		r.charged = 0
	}
}

// done gives back what the request held.
func (c *conn) done(r *request) {
	c.freeBuf(r)
	<-c.slots
	requestPool.Put(r)
}

// run executes a request and queues its reply. A panic in the disk or
// the handler becomes an EIO reply and a log line; the connection lives
// on.
func (c *conn) run(r *request) {
	errno, cause := c.execSafe(r)
	if errno != 0 {
		c.logFailure(r, errno, cause)
	}
	if r.typ != cmdRead {
		// A WRITE's data is on the disk now: its memory is free before
		// the reply goes out, however long the client takes to read it.
		c.freeBuf(r)
	}
	c.buildReply(r, errno)
	c.enqueue(r)
}

func (c *conn) execSafe(r *request) (errno uint32, cause error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("nbd: panic in request handler", "command", cmdName(r.typ), "offset", r.off, "length", r.length, "panic", p, "stack", string(debug.Stack()))
			r.chunks = r.chunks[:0]
			errno, cause = errIO, fmt.Errorf("panic: %v", p)
		}
	}()
	return c.exec(r)
}

func (c *conn) logFailure(r *request, errno uint32, cause error) {
	lvl := c.log.Debug
	if errno == errIO || errno == errNoSpc {
		lvl = c.log.Warn
	}
	lvl("nbd: request failed", "command", cmdName(r.typ), "offset", r.off, "length", r.length, "errno", errno, "error", cause)
}

// buildReply lays out the reply to r in r.bufs: simple, or structured
// chunks when negotiated and needed.
func (c *conn) buildReply(r *request, errno uint32) {
	r.hdrs, r.bufs = r.hdrs[:0], r.bufs[:0]
	r.errno = errno
	if errno != 0 {
		if c.structured {
			c.buildError(r, errno)
		} else {
			r.buildSimple(errno, nil)
		}
		return
	}
	switch r.typ {
	case cmdRead:
		if !c.structured {
			r.buildSimple(0, r.buf)
		} else {
			r.buildChunks()
		}
	case cmdBlockStatus:
		r.buildStatusChunks()
	default:
		r.buildSimple(0, nil)
	}
}

func (r *request) buildSimple(errno uint32, data []byte) {
	h := r.header(simpleHdrSize)
	binary.BigEndian.PutUint32(h[0:], simpleMagic)
	binary.BigEndian.PutUint32(h[4:], errno)
	binary.BigEndian.PutUint64(h[8:], r.handle)
	r.bufs = append(r.bufs, h)
	if len(data) > 0 {
		r.bufs = append(r.bufs, data)
	}
}

// header returns n more bytes of r.hdrs. Callers size r.hdrs first when
// they take several headers, so earlier slices stay valid.
func (r *request) header(n int) []byte {
	start := len(r.hdrs)
	r.hdrs = append(r.hdrs, make([]byte, n)...)
	return r.hdrs[start : start+n]
}

func putChunkHeader(h []byte, flags, typ uint16, handle uint64, n int) {
	binary.BigEndian.PutUint32(h[0:], structuredMagic)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], handle)
	binary.BigEndian.PutUint32(h[16:], uint32(n))
}

func (r *request) buildChunk(flags, typ uint16, payload []byte) {
	h := r.header(chunkHdrSize)
	putChunkHeader(h, flags, typ, r.handle, len(payload))
	r.bufs = append(r.bufs, h)
	if len(payload) > 0 {
		r.bufs = append(r.bufs, payload)
	}
}

// buildStatusChunks lays out a BLOCK_STATUS reply: a chunk per selected
// context (blockStatus filled their payloads), the last one done.
func (r *request) buildStatusChunks() {
	if cap(r.hdrs) < 2*chunkHdrSize {
		r.hdrs = make([]byte, 0, 2*chunkHdrSize)
	}
	switch {
	case len(r.status) > 0 && len(r.changed) > 0:
		r.buildChunk(0, replyBlockStatus, r.status)
		r.buildChunk(replyFlagDone, replyBlockStatus, r.changed)
	case len(r.changed) > 0:
		r.buildChunk(replyFlagDone, replyBlockStatus, r.changed)
	default:
		r.buildChunk(replyFlagDone, replyBlockStatus, r.status)
	}
}

// buildError makes an NBD_REPLY_TYPE_ERROR chunk: the error and a short
// message naming its class (the full error goes to the log, not to the
// client, since it names server paths).
func (c *conn) buildError(r *request, errno uint32) {
	msg := errnoText(errno)
	r.status = binary.BigEndian.AppendUint32(r.status[:0], errno)
	r.status = binary.BigEndian.AppendUint16(r.status, uint16(len(msg)))
	r.status = append(r.status, msg...)
	r.buildChunk(replyFlagDone, replyError, r.status)
}

// buildChunks lays out a structured READ reply: the chunks exec listed,
// the last one marked done. All data was read before the first byte goes
// out, so no error can follow a chunk.
func (r *request) buildChunks() {
	if len(r.chunks) == 0 {
		// A zero-length read: nothing to describe.
		r.buildChunk(replyFlagDone, replyNone, nil)
		return
	}
	base := int64(r.off)
	need := len(r.chunks) * (chunkHdrSize + 12)
	if cap(r.hdrs) < need {
		r.hdrs = make([]byte, 0, need)
	}
	for i, ch := range r.chunks {
		var flags uint16
		if i == len(r.chunks)-1 {
			flags = replyFlagDone
		}
		if ch.hole {
			h := r.header(chunkHdrSize + 12)
			putChunkHeader(h, flags, replyOffsetHole, r.handle, 12)
			binary.BigEndian.PutUint64(h[20:], uint64(ch.off))
			binary.BigEndian.PutUint32(h[28:], uint32(ch.n))
			r.bufs = append(r.bufs, h)
			continue
		}
		h := r.header(chunkHdrSize + 8)
		putChunkHeader(h, flags, replyOffsetData, r.handle, 8+int(ch.n))
		binary.BigEndian.PutUint64(h[20:], uint64(ch.off))
		r.bufs = append(r.bufs, h, r.buf[ch.off-base:ch.off-base+ch.n])
	}
}

// enqueue hands r's reply to the writer. There is no writer goroutine:
// the first handler to find nobody writing becomes the writer and sends
// every reply queued meanwhile in one writev, then releases those
// requests. Under load replies go out in batches; at queue depth one
// nothing waits for a goroutine switch.
func (c *conn) enqueue(r *request) {
	c.qmu.Lock()
	c.pending = append(c.pending, r)
	if c.writing {
		c.qmu.Unlock()
		return
	}
	c.writing = true
	for len(c.pending) > 0 {
		batch := c.pending
		c.pending = c.spare[:0]
		c.qmu.Unlock()
		c.writeBatch(batch)
		c.qmu.Lock()
		clear(batch)
		c.spare = batch[:0]
	}
	c.writing = false
	c.qmu.Unlock()
}

// writeBatch sends the replies of batch and releases the requests. Only
// the one active writer (c.writing) calls it.
func (c *conn) writeBatch(batch []*request) {
	bufs := c.iov[:0]
	for _, r := range batch {
		bufs = append(bufs, r.bufs...)
	}
	c.iov = bufs[:0]
	n := len(bufs) // sending consumes bufs
	if c.werr == nil {
		if err := c.send(bufs); err != nil {
			c.werr = err
			if isTimeout(err) {
				c.log.Warn("nbd: client takes no replies; closing the connection", "waited", c.srv.stallTimeout())
			} else {
				c.log.Debug("nbd: reply not sent", "error", err)
			}
			// The stream is broken; make the reader stop too.
			c.abort()
		}
	}
	clear(c.iov[:n])
	now := c.touch()
	for _, r := range batch {
		c.export.stats.record(r, now)
		c.done(r)
		c.inflight.Done()
	}
}

func cmdName(t uint16) string {
	switch t {
	case cmdRead:
		return "READ"
	case cmdWrite:
		return "WRITE"
	case cmdDisc:
		return "DISC"
	case cmdFlush:
		return "FLUSH"
	case cmdTrim:
		return "TRIM"
	case cmdCache:
		return "CACHE"
	case cmdWriteZeroes:
		return "WRITE_ZEROES"
	case cmdBlockStatus:
		return "BLOCK_STATUS"
	}
	return fmt.Sprintf("command %d", t)
}
