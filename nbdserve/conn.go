package nbdserve

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one client connection: negotiation, then transmission.
type conn struct {
	srv *Server
	// raw is the accepted connection; deadlines set on it also stop reads
	// of a TLS connection layered over it.
	raw net.Conn
	// nc is raw, or the TLS connection over it once STARTTLS succeeded.
	// Only the connection's own goroutines use it.
	nc  net.Conn
	br  *bufio.Reader
	log *slog.Logger

	// Negotiated state, set during the handshake and read-only after.
	export     *Export
	structured bool
	noZeroes   bool
	tlsOn      bool
	// metaExport is the export the last SET_META_CONTEXT named, and
	// metaAlloc whether it selected base:allocation.
	metaExport string
	metaAlloc  bool
	// tflags are the transmission flags sent to the client.
	tflags uint16

	// stopping is set when the server shuts down: the reader stops at
	// the next request boundary (see stopReading).
	stopping atomic.Bool

	// werr is the first error writing to the client; after it nothing is
	// sent. Written by the handshake, then only by the active reply
	// writer (see enqueue).
	werr error

	// qmu guards the reply queue: pending replies, spare (the previous
	// batch's slice, reused) and writing (a handler is sending replies).
	// iov is the active writer's scratch.
	qmu     sync.Mutex
	pending []*request
	spare   []*request
	writing bool
	iov     net.Buffers

	// slots bounds the requests in flight.
	slots chan struct{}
	// budget bounds the bytes of request buffers in flight.
	budget budget
	// inflight counts the requests being handled.
	inflight sync.WaitGroup

	// work carries requests from the reader to the workers; workers is
	// how many exist (reader only), idle how many have finished their
	// request and were not claimed for another since (see dispatch).
	work    chan *request
	workers int
	idle    atomic.Int32
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		srv:   s,
		raw:   nc,
		nc:    nc,
		br:    bufio.NewReaderSize(nc, 64<<10),
		log:   s.log().With("remote", remoteName(nc)),
		slots: make(chan struct{}, s.maxInFlight()),
		work:  make(chan *request, s.maxInFlight()),
	}
	c.budget.init(s.maxBufferBytes())
	return c
}

func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return nc.LocalAddr().Network()
}

// serve runs the connection to its end and closes it.
func (c *conn) serve(ctx context.Context) {
	defer c.nc.Close()
	c.log.Debug("nbd: connection opened")
	if c.stopping.Load() || ctx.Err() != nil {
		return
	}
	c.raw.SetDeadline(time.Now().Add(c.srv.handshakeTimeout()))
	if c.stopping.Load() {
		return // stopReading ran before the deadline above replaced its own
	}
	ok, err := c.handshake()
	if err != nil {
		c.log.Info("nbd: negotiation ended", "error", err)
		return
	}
	if !ok {
		c.log.Debug("nbd: client aborted negotiation")
		return
	}
	// Clear the deadline, then look at stopping: see stopReading.
	c.raw.SetDeadline(time.Time{})
	if c.stopping.Load() {
		return
	}
	c.log.Debug("nbd: transmission", "export", c.export.Name, "structured", c.structured)
	c.transmit()
}

// stopReading makes the connection stop reading requests: a blocked read
// returns at once, and serve checks the flag after clearing deadlines.
// Requests already read are finished and answered.
func (c *conn) stopReading() {
	c.stopping.Store(true)
	c.raw.SetReadDeadline(time.Now())
}

// isTimeout reports a read ended by stopReading (or a handshake deadline).
func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// writeAll sends bufs during negotiation, when nothing else writes.
func (c *conn) writeAll(bufs ...[]byte) error {
	if c.werr != nil {
		return c.werr
	}
	nb := net.Buffers(bufs)
	if _, err := nb.WriteTo(c.nc); err != nil {
		c.werr = err
		return err
	}
	return nil
}

// discard skips n bytes of the stream without buffering them.
func (c *conn) discard(n int64) error {
	_, err := io.CopyN(io.Discard, c.br, n)
	return err
}

// budget is a byte semaphore for request buffers.
type budget struct {
	mu   sync.Mutex
	cond sync.Cond
	max  int64
	used int64 // guarded by mu
}

func (b *budget) init(max int64) {
	b.max = max
	b.cond.L = &b.mu
}

// acquire waits until n more bytes fit. n never exceeds max (requests are
// bounded by the maximum payload first).
func (b *budget) acquire(n int64) {
	b.mu.Lock()
	for b.used+n > b.max {
		b.cond.Wait()
	}
	b.used += n
	b.mu.Unlock()
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}
