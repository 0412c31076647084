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
	// metaAlloc and metaChanged whether it selected base:allocation and
	// vhdkit:changed.
	metaExport  string
	metaAlloc   bool
	metaChanged bool
	// tflags are the transmission flags sent to the client.
	tflags uint16

	// stopping is set when the server shuts down: the reader stops at
	// the next request boundary (see stopReading). quit is closed then
	// too, ending any wait for memory budget.
	stopping atomic.Bool
	quit     chan struct{}
	quitOnce sync.Once

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
	// share bounds the bytes of this connection's request buffers, within
	// the server's budget (srv.memory()).
	share *budget
	// inflight counts the requests being handled.
	inflight sync.WaitGroup

	// work carries requests from the reader to the workers; workers is
	// how many exist (reader only), idle how many have finished their
	// request and were not claimed for another since (see dispatch).
	work    chan *request
	workers int
	idle    atomic.Int32

	// lis is the listener the connection came through. negotiating is
	// set until the handshake ends; active is when the connection last
	// did something (accepted, read a request, sent replies), in
	// UnixNano; evicted is set once it was chosen to make room. Eviction
	// reads them (evict.go).
	lis         *listener
	negotiating atomic.Bool
	active      atomic.Int64
	evicted     atomic.Bool
}

func newConn(s *Server, lis *listener, nc net.Conn) *conn {
	c := &conn{
		lis:   lis,
		srv:   s,
		raw:   nc,
		nc:    nc,
		br:    bufio.NewReaderSize(nc, 64<<10),
		log:   s.log().With("remote", remoteName(nc)),
		slots: make(chan struct{}, s.maxInFlight()),
		work:  make(chan *request, s.maxInFlight()),
		quit:  make(chan struct{}),
		share: newBudget(s.connShare()),
	}
	c.negotiating.Store(true)
	c.touch()
	return c
}

// touch records activity, which keeps the connection from being evicted
// as idle. It returns the same instant for request latencies (see
// clockBase), so a request costs one clock read for both.
func (c *conn) touch() time.Duration {
	now := time.Now()
	c.active.Store(now.UnixNano())
	return now.Sub(clockBase)
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
	c.touch()
	c.negotiating.Store(false)
	if c.stopping.Load() {
		return
	}
	c.log.Debug("nbd: transmission", "export", c.export.Name, "structured", c.structured)
	c.export.stats.connected()
	defer c.export.stats.disconnected()
	c.transmit()
}

// stopReading makes the connection stop reading requests: a blocked read
// returns at once, and serve checks the flag after clearing deadlines.
// Requests already read are finished and answered.
func (c *conn) stopReading() {
	c.stopping.Store(true)
	c.closeQuit()
	c.raw.SetReadDeadline(time.Now())
}

// forceClose ends a connection that did not drain in the shutdown grace
// period: a reply write blocked on a client that reads nothing fails at
// once, and so does everything after it. Requests running on the disk
// finish; their replies are dropped.
func (c *conn) forceClose() {
	c.stopReading()
	c.raw.Close()
}

// abort ends a connection whose stream broke (a reply could not be
// sent): the reader stops, whether it waits for the socket or for
// memory.
func (c *conn) abort() {
	c.closeQuit()
	c.raw.Close()
}

func (c *conn) closeQuit() { c.quitOnce.Do(func() { close(c.quit) }) }

// setReadDeadline sets the read deadline without losing a stop:
// stopReading sets stopping, then a deadline in the past, so a deadline
// set here before that is replaced by it, and one set after is replaced
// by the check.
func (c *conn) setReadDeadline(t time.Time) {
	c.raw.SetReadDeadline(t)
	if c.stopping.Load() {
		c.raw.SetReadDeadline(time.Now())
	}
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
