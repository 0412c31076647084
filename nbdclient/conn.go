package nbdclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options set up a connection.
type Options struct {
	// MetaContexts are selected if the server has them (base:allocation,
	// vhdkit:changed); Info().Contexts says which it had.
	MetaContexts []string
	// HandshakeTimeout bounds connecting and negotiating (10 s if 0).
	HandshakeTimeout time.Duration
	// StallTimeout ends the connection when requests wait and the server
	// sends nothing for this long, or takes no request bytes for this
	// long (60 s if 0).
	StallTimeout time.Duration
	// MaxInFlight bounds the requests in flight on the connection; more
	// wait for a slot (16 if 0).
	MaxInFlight int
	// TLS configures the TLS of an nbds URI (URI.TLSConfig builds one);
	// if nil, one is built from the URI alone (its tls-certificates, else
	// the system's CAs). It must be nil for a plaintext URI.
	TLS *tls.Config
}

func (o *Options) handshakeTimeout() time.Duration {
	if o.HandshakeTimeout > 0 {
		return o.HandshakeTimeout
	}
	return 10 * time.Second
}

func (o *Options) stallTimeout() time.Duration {
	if o.StallTimeout > 0 {
		return o.StallTimeout
	}
	return 60 * time.Second
}

// Conn is one connection to an export in transmission. Its methods may be
// called from many goroutines at once: requests are pipelined and their
// replies, which may come in any order, are matched by handle.
type Conn struct {
	nc    net.Conn
	br    *bufio.Reader
	info  Info
	stall time.Duration
	slots chan struct{}
	next  atomic.Uint64

	// wmu serialises requests on the socket.
	wmu sync.Mutex

	// mu guards calls (the requests in flight, by handle) and err (why
	// the connection ended; no request is sent after it is set). The read
	// deadline is changed under it too, so it always matches whether
	// anything is in flight.
	mu    sync.Mutex
	calls map[uint64]*call
	err   error

	// readerDone is closed when the reply reader has exited and every
	// call in flight has been ended.
	readerDone chan struct{}
}

// call is one request in flight.
type call struct {
	cmd uint16
	off int64
	n   uint32
	// buf is a READ's destination, written by the reply reader only
	// until done is closed.
	buf     []byte
	covered coverage
	// status collects BLOCK_STATUS chunks, by context id.
	status map[uint32][]Extent
	err    error
	done   chan struct{}
}

// Dial connects to uri (see ParseURI) and negotiates.
func Dial(ctx context.Context, uri string, opts Options) (*Conn, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	return DialURI(ctx, u, opts)
}

// DialURI connects to u and negotiates: fixed newstyle, STARTTLS for an
// nbds URI, structured replies, the metadata contexts asked for, GO. The
// whole of it must take at most the handshake timeout.
func DialURI(ctx context.Context, u *URI, opts Options) (*Conn, error) {
	cfg, err := tlsConfig(u, opts.TLS)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.handshakeTimeout())
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, u.Network, u.Address)
	if err != nil {
		return nil, fmt.Errorf("nbd: connecting to %s: %w", u, err)
	}
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	s := &stream{nc: nc, br: newReader(nc)}
	n := &negotiator{rw: s.rw(), export: u.Export, contexts: opts.MetaContexts}
	if cfg != nil {
		n.upgrade = func() (io.ReadWriter, error) { return s.startTLS(ctx, cfg) }
	}
	info, err := n.negotiate()
	if err == nil && !stop() {
		err = ctx.Err()
	}
	if err != nil {
		if cfg != nil {
			err = explainTLS(s.withAlert(err), cfg)
			if n.tlsOn && n.tlsReplies == 0 {
				err = hungUpAfterTLS(err, cfg)
			}
		}
		s.nc.Close()
		return nil, fmt.Errorf("%w (negotiating with %s)", err, u)
	}
	s.nc.SetDeadline(time.Time{})
	c := newConn(s.nc, s.br, *info, opts)
	go c.readReplies()
	return c, nil
}

// tlsConfig is the TLS configuration to dial u with: nil for a plaintext
// URI, opts' (with the URI's host as the server name unless it names
// one) or one built from the URI for nbds.
func tlsConfig(u *URI, cfg *tls.Config) (*tls.Config, error) {
	switch {
	case !u.TLS && cfg != nil:
		return nil, fmt.Errorf("nbd: TLS configured for %s, a plaintext URI: write nbds:// (or nbds+unix://) to use TLS", u)
	case !u.TLS:
		return nil, nil
	case cfg == nil:
		return u.TLSConfig(TLSFiles{})
	case cfg.ServerName == "":
		cfg = cfg.Clone()
		cfg.ServerName = u.Host
	}
	return cfg, nil
}

// stream is a connection being negotiated: the socket, or the TLS
// session over it once started, and the reader buffering it.
type stream struct {
	nc net.Conn
	br *bufio.Reader
}

func (s *stream) rw() io.ReadWriter {
	return struct {
		io.Reader
		io.Writer
	}{s.br, s.nc}
}

// withAlert is err, or the TLS alert the server sent before it hung up
// when err does not say it: a TLS 1.3 server checks the client's
// certificate after the client's handshake ends, so its refusal may
// arrive only after a write of ours already failed on the closed socket.
func (s *stream) withAlert(err error) error {
	tc, ok := s.nc.(*tls.Conn)
	var remote *net.OpError
	if !ok || errors.As(err, &remote) && remote.Op == "remote error" {
		return err
	}
	tc.SetReadDeadline(time.Now().Add(time.Second))
	_, rerr := tc.Read(make([]byte, 1))
	if errors.As(rerr, &remote) && remote.Op == "remote error" {
		return fmt.Errorf("nbd: the server ended the TLS session: %w", rerr)
	}
	return err
}

// startTLS runs the TLS handshake over the socket (the server accepted
// STARTTLS) and returns the stream to negotiate on over TLS. Nothing may
// be buffered yet: bytes the server sent before the handshake would be
// read as if they came over TLS.
func (s *stream) startTLS(ctx context.Context, cfg *tls.Config) (io.ReadWriter, error) {
	if n := s.br.Buffered(); n > 0 {
		return nil, protoErr("%d bytes sent before the TLS handshake", n)
	}
	tc := tls.Client(s.nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("nbd: TLS handshake: %w", err)
	}
	s.nc, s.br = tc, newReader(tc)
	return s.rw(), nil
}

// newReader buffers replies: headers come in small reads, data straight
// into callers' buffers once the buffer is empty.
func newReader(nc net.Conn) *bufio.Reader { return bufio.NewReaderSize(nc, 256<<10) }

func newConn(nc net.Conn, br *bufio.Reader, info Info, opts Options) *Conn {
	inflight := opts.MaxInFlight
	if inflight <= 0 {
		inflight = 16
	}
	return &Conn{nc: nc, br: br, info: info, stall: opts.stallTimeout(), slots: make(chan struct{}, inflight),
		calls: map[uint64]*call{}, readerDone: make(chan struct{})}
}

// Info is what negotiation learnt about the export.
func (c *Conn) Info() Info { return c.info }

// Close ends the connection: DISC is sent when the connection is
// healthy and nothing is in flight, then the socket is closed. Calls in
// flight end with ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	healthy := c.err == nil && len(c.calls) == 0
	c.mu.Unlock()
	if healthy {
		c.send(0, cmdDisc, 0, 0, 0)
	}
	c.fail(ErrClosed)
	<-c.readerDone
	return nil
}

// fail ends the connection with err (the first error wins).
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.nc.Close()
}

// ReadAt reads len(p) bytes at off into p; holes the server reports read
// as zeros. len(p) must be at most Info().MaxBlock. When ctx ends first
// the connection is closed (a request cannot be withdrawn from the
// server) and ctx's error returned.
func (c *Conn) ReadAt(ctx context.Context, p []byte, off int64) error {
	if uint64(len(p)) > uint64(c.info.MaxBlock) {
		return fmt.Errorf("nbd: a read of %d bytes is more than the server takes (%d)", len(p), c.info.MaxBlock)
	}
	if off < 0 || int64(len(p)) > c.info.Size-off || off > c.info.Size {
		return fmt.Errorf("nbd: a read at %d+%d is outside the export (%d bytes)", off, len(p), c.info.Size)
	}
	if len(p) == 0 {
		return nil
	}
	cl := &call{cmd: cmdRead, off: off, n: uint32(len(p)), buf: p}
	return c.do(ctx, cl, 0)
}

// BlockStatus asks about [off, off+n) (n at most MaxStatusLength) in
// every context selected, and returns each context's descriptors by
// name. Each list starts at off and covers at most n bytes (the last
// descriptor is cut at off+n); a server may answer about less.
func (c *Conn) BlockStatus(ctx context.Context, off int64, n uint32) (map[string][]Extent, error) {
	if len(c.info.Contexts) == 0 {
		return nil, errors.New("nbd: no metadata context was negotiated: the server has no block status")
	}
	if n == 0 || n > MaxStatusLength || off < 0 || off > c.info.Size || int64(n) > c.info.Size-off {
		return nil, fmt.Errorf("nbd: block status of %d+%d: outside the export (%d bytes) or over %d bytes", off, n, c.info.Size, MaxStatusLength)
	}
	cl := &call{cmd: cmdBlockStatus, off: off, n: n, status: map[uint32][]Extent{}}
	if err := c.do(ctx, cl, 0); err != nil {
		return nil, err
	}
	out := map[string][]Extent{}
	for name, id := range c.info.Contexts {
		ext, ok := cl.status[id]
		if !ok {
			return nil, protoErr("BLOCK_STATUS reply without context %s", name)
		}
		out[name] = clip(ext, int64(n))
	}
	return out, nil
}

// clip cuts descriptors at n bytes.
func clip(ext []Extent, n int64) []Extent {
	var sum int64
	for i, e := range ext {
		if e.Len >= n-sum {
			ext[i].Len = n - sum
			return ext[:i+1]
		}
		sum += e.Len
	}
	return ext
}

// do sends cl and waits for its reply.
func (c *Conn) do(ctx context.Context, cl *call, flags uint16) error {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.slots }()
	cl.done = make(chan struct{})
	handle := c.next.Add(1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	if len(c.calls) == 0 {
		c.nc.SetReadDeadline(time.Now().Add(c.stall))
	}
	c.calls[handle] = cl
	c.mu.Unlock()
	if err := c.send(flags, cl.cmd, handle, cl.off, cl.n); err != nil {
		c.fail(fmt.Errorf("nbd: sending a request: %w", err))
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		// The reply may still come into cl.buf: the connection must go
		// before the buffer is handed back.
		c.fail(ctx.Err())
		<-cl.done
		return ctx.Err()
	}
	return cl.err
}

// send writes one request header.
func (c *Conn) send(flags, cmd uint16, handle uint64, off int64, n uint32) error {
	var b [requestSize]byte
	binary.BigEndian.PutUint32(b[0:], requestMagic)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], cmd)
	binary.BigEndian.PutUint64(b[8:], handle)
	binary.BigEndian.PutUint64(b[16:], uint64(off))
	binary.BigEndian.PutUint32(b[24:], n)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(c.stall))
	_, err := c.nc.Write(b[:])
	return err
}
