package nbdserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"vhdkit/engine"
)

// Export is one disk offered under a name.
type Export struct {
	// Name is what clients ask for (NBD_OPT_GO, nbd+unix:///NAME).
	Name string
	// Description is shown by clients (nbdinfo); optional.
	Description string
	// Disk is served. Every connection to the export shares it: that is
	// what makes CAN_MULTI_CONN true (one Flush covers writes made on
	// every connection).
	Disk engine.Disk

	// stats are counted by every connection that uses the export
	// (stats.go); an Export must not be copied once served.
	stats exportStats
}

// Defaults for the limits of a Server whose fields are zero.
const (
	// DefaultMaxPayload is the largest READ or WRITE (32 MiB, what the
	// spec says any client may send and what qemu and nbdkit accept).
	DefaultMaxPayload = 32 << 20
	// DefaultMaxInFlight bounds the requests one connection runs at once.
	DefaultMaxInFlight = 64
	// DefaultMemoryBudget bounds the request data of all connections
	// together: four maximal requests, or 512 of 256 KiB (what nbdcopy
	// keeps in flight over four connections, twice over).
	DefaultMemoryBudget = 4 * DefaultMaxPayload
	// DefaultStallTimeout is how long a client may leave a reply untaken
	// (or a WRITE's data unsent) before it is disconnected.
	DefaultStallTimeout = 30 * time.Second
	// DefaultShutdownGrace is how long shutdown waits for requests in
	// flight before it closes the connections still busy: short enough
	// that a container manager's stop timeout (10 s for Docker) still
	// leaves time for the final flush.
	DefaultShutdownGrace = 5 * time.Second
	// DefaultMaxConnections bounds the connections one listener serves
	// at once.
	DefaultMaxConnections = 256
	// DefaultHandshakeTimeout bounds the whole negotiation phase: real
	// clients take milliseconds; a connection that negotiates no further
	// holds a connection slot meanwhile (see evict.go).
	DefaultHandshakeTimeout = 10 * time.Second
	// maxOptionLen bounds an option's data; longer options end the
	// connection before anything is read into memory. The longest valid
	// option (SET_META_CONTEXT with a few queries) is far shorter.
	maxOptionLen = 64 << 10
	// maxOptions bounds the options of one negotiation.
	maxOptions = 1024
	// maxStringLen is the spec's limit for names and queries.
	maxStringLen = 4096
)

// Server serves exports over NBD. Configure its fields, then call Serve;
// the fields must not change afterwards. The exports may: AddExport and
// RemoveExport change them while Serve runs (exports.go).
type Server struct {
	// Exports by name, the ones offered at start. The map is read once,
	// when Serve or an export method is first called; after that the
	// exports change only through AddExport and RemoveExport, and
	// ExportNames and LookupExport show them.
	Exports map[string]*Export
	// Default names the export that the empty name "" selects; empty
	// means there is none.
	Default string
	// Logger receives connection events and errors; silent if nil.
	Logger *slog.Logger
	// TLSConfig, if set, makes TLS mandatory (FORCEDTLS): every option
	// but STARTTLS and ABORT is refused until the client starts TLS.
	TLSConfig *tls.Config

	// Limits; the Default* constants when zero.
	MaxPayload       int
	MaxInFlight      int
	MaxConnections   int
	HandshakeTimeout time.Duration

	// MemoryBudget bounds the request data (READ data on its way out,
	// WRITE data on its way in) held for all connections together. A
	// request that does not fit waits, and its connection is not read
	// meanwhile, which pushes back on that client; one larger than the
	// whole budget waits for all of it. DefaultMemoryBudget when zero.
	MemoryBudget int64
	// MaxBufferBytes bounds one connection's share of MemoryBudget, so a
	// client that stops reading replies cannot hold all of it; half the
	// budget when zero.
	MaxBufferBytes int64
	// StallTimeout is how long a client may hold server memory without
	// moving: a reply it takes none of, or a WRITE whose data stops
	// arriving. The connection is then closed, which frees the memory.
	// DefaultStallTimeout when zero.
	StallTimeout time.Duration
	// ShutdownGrace is how long shutdown waits for the requests in flight
	// to be answered before it closes the connections still busy.
	// DefaultShutdownGrace when zero.
	ShutdownGrace time.Duration

	tableOnce sync.Once
	// table holds the exports clients can open now (exports.go), made
	// from Exports on first use; tableErr says why Exports was refused.
	table    *exportTable
	tableErr error

	memOnce sync.Once
	// mem is the server-wide MemoryBudget, made on first use.
	mem *budget

	mu sync.Mutex
	// conns are the live connections, for shutdown. Guarded by mu.
	conns map[*conn]struct{}
	wg    sync.WaitGroup
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) maxPayload() int {
	if s.MaxPayload > 0 {
		return s.MaxPayload
	}
	return DefaultMaxPayload
}

func (s *Server) maxInFlight() int {
	if s.MaxInFlight > 0 {
		return s.MaxInFlight
	}
	return DefaultMaxInFlight
}

// memory is the server-wide budget for request data.
func (s *Server) memory() *budget {
	s.memOnce.Do(func() {
		n := s.MemoryBudget
		if n <= 0 {
			n = DefaultMemoryBudget
		}
		s.mem = newBudget(n)
	})
	return s.mem
}

// connShare is one connection's share of the memory budget.
func (s *Server) connShare() int64 {
	all := s.memory().max
	if s.MaxBufferBytes > 0 {
		return min(s.MaxBufferBytes, all)
	}
	return max(all/2, 1)
}

func (s *Server) stallTimeout() time.Duration {
	if s.StallTimeout > 0 {
		return s.StallTimeout
	}
	return DefaultStallTimeout
}

func (s *Server) shutdownGrace() time.Duration {
	if s.ShutdownGrace > 0 {
		return s.ShutdownGrace
	}
	return DefaultShutdownGrace
}

func (s *Server) maxConnections() int {
	if s.MaxConnections > 0 {
		return s.MaxConnections
	}
	return DefaultMaxConnections
}

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout > 0 {
		return s.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

// Serve accepts connections on l until ctx is cancelled or l fails, and
// serves each in its own goroutine. When ctx is cancelled it stops
// accepting, lets every connection finish the requests it has read,
// flushes the disks that were written, closes the connections and
// returns nil. It does not close the disks. Serve may run on several
// listeners at once with one context; each call returns once every
// connection of the server has drained. Transient accept errors (out of
// file descriptors) are logged and retried.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if _, err := s.exports(); err != nil {
		return err
	}
	if s.Default != "" {
		if _, ok := s.LookupExport(s.Default); !ok {
			return fmt.Errorf("nbdserve: default export %q does not exist: add it, or leave Default empty", s.Default)
		}
	}
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	lis := &listener{slots: make(chan struct{}, s.maxConnections())}
	var err error
	var delay time.Duration
	for {
		nc, aerr := l.Accept()
		if aerr != nil {
			if ctx.Err() != nil {
				break
			}
			if transientAcceptError(aerr) {
				// Out of descriptors and the like: wait and go on, as
				// net/http does, rather than stop serving.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log().Warn("nbd: accept failed; retrying", "error", aerr, "in", delay)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
				}
				continue
			}
			err = aerr
			break
		}
		delay = 0
		if !s.admit(ctx, lis) {
			s.log().Warn("nbd: every connection is busy; refusing a new one", "remote", nc.RemoteAddr().String(), "limit", s.maxConnections())
			nc.Close()
			continue
		}
		c := newConn(s, lis, nc)
		s.track(c, true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-lis.slots }()
			defer s.track(c, false)
			// After serve: the connection's requests have left the disk
			// and its flush is done (RemoveExport waits for this).
			defer s.detach(c)
			c.serve(ctx)
		}()
	}
	s.shutdown()
	return err
}

func transientAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) track(c *conn, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	if on {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

// shutdown asks every connection to stop reading requests and waits for
// them to drain, at most the grace period: then it closes the ones still
// busy (a client that takes no replies would otherwise hold shutdown
// until its stall timeout) and waits for their requests to leave the
// disk. Each connection flushes its export as it ends.
func (s *Server) shutdown() {
	s.eachConn((*conn).stopReading)
	drained := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(drained)
	}()
	grace := time.NewTimer(s.shutdownGrace())
	defer grace.Stop()
	select {
	case <-drained:
		return
	case <-grace.C:
	}
	n := s.eachConn((*conn).forceClose)
	s.log().Warn("nbd: shutdown grace period over; closing connections still busy", "connections", n, "grace", s.shutdownGrace())
	<-drained
}

// eachConn calls fn for every live connection and returns how many there
// were.
func (s *Server) eachConn(fn func(*conn)) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		fn(c)
	}
	return len(s.conns)
}

var errServerShutdown = errors.New("nbdserve: server shutting down")
