package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Limits and defaults.
const (
	// MaxMessageBytes bounds one message. query-qmp-schema's reply is
	// one ~200 KB line in QEMU 7.2, so lines are not limited as such
	// (a line reader with a 64 KiB limit fails on it): only a message
	// that would need more memory than this is refused.
	MaxMessageBytes = 16 << 20
	// DefaultHandshakeTimeout bounds the greeting and qmp_capabilities
	// when the context has no deadline.
	DefaultHandshakeTimeout = 10 * time.Second
	// EventBuffer is how many events wait for the reader of Events
	// before newer ones are dropped (and counted: DroppedEvents).
	EventBuffer = 1024
	// writeTimeout bounds sending one command: QEMU reads its monitor
	// in its main loop, which never blocks for long.
	writeTimeout = 10 * time.Second
)

// Client is a QMP connection to one QEMU. Commands may be sent from
// several goroutines; each waits for the reply carrying its own id, so
// replies are matched whatever order they come in and events that
// arrive between a command and its reply (RESUME before cont's reply)
// go to the event stream, never to the command.
type Client struct {
	conn     net.Conn
	greeting Greeting
	log      *slog.Logger

	wmu sync.Mutex // serializes writes of whole commands

	mu sync.Mutex
	// pending maps a command's id (as JSON text) to where its reply goes;
	// nextID numbers commands; err is why the connection ended. Guarded
	// by mu.
	pending map[string]chan Message
	nextID  uint64
	err     error
	dropped uint64

	events chan Event
	done   chan struct{}
}

// Dial connects to QEMU's QMP socket (a unix socket path) and does the
// handshake (see New).
func Dial(ctx context.Context, path string, log *slog.Logger) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: connect to %s: %w", path, err)
	}
	return New(ctx, conn, log)
}

// New speaks QMP over conn: it reads the greeting and enters command
// mode (qmp_capabilities), within ctx's deadline or
// DefaultHandshakeTimeout. The client owns conn from then on; on
// failure conn is closed. log receives protocol oddities (replies
// nobody waits for); silent if nil.
func New(ctx context.Context, conn net.Conn, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{conn: conn, log: log, pending: map[string]chan Message{},
		events: make(chan Event, EventBuffer), done: make(chan struct{})}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultHandshakeTimeout)
	}
	conn.SetReadDeadline(deadline)
	dec := newDecoder(conn)
	m, err := dec.next()
	if err == nil && m.Kind != KindGreeting {
		err = fmt.Errorf("%w: the first message is not QMP's greeting", ErrProtocol)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: read the greeting: %w", err)
	}
	c.greeting = *m.Greeting
	conn.SetReadDeadline(time.Time{})
	go c.readLoop(dec)
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := c.Execute(hctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp: enter command mode: %w", err)
	}
	return c, nil
}

// Greeting is what QEMU said on connecting (its version).
func (c *Client) Greeting() Greeting { return c.greeting }

// Events is the stream of QEMU's events, in the order they came. It is
// closed when the connection ends. If its reader falls EventBuffer
// behind, newer events are dropped and counted (DroppedEvents).
func (c *Client) Events() <-chan Event { return c.events }

// DroppedEvents counts events dropped because nobody read Events.
func (c *Client) DroppedEvents() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// Done is closed when the connection has ended; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the connection ended (io.EOF when QEMU closed it), or nil
// while it lasts.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection; commands waiting fail with ErrClosed.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// Execute sends command with args (nil for none; anything encoding/json
// turns into an object) and waits for its reply, until ctx ends. A
// success reply's value is decoded into result unless result is nil; an
// error reply is returned as *Error.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	raw, err := c.Raw(ctx, command, args)
	if err != nil || result == nil {
		return err
	}
	if err := json.Unmarshal(raw, result); err != nil {
		return fmt.Errorf("qmp: %s: decode its reply: %w", command, err)
	}
	return nil
}

// Raw is Execute returning the success reply's value undecoded.
func (c *Client) Raw(ctx context.Context, command string, args any) (json.RawMessage, error) {
	id, ch, err := c.register()
	if err != nil {
		return nil, fmt.Errorf("qmp: %s: %w", command, err)
	}
	defer c.unregister(id)
	if err := c.send(command, args, id); err != nil {
		return nil, fmt.Errorf("qmp: %s: %w", command, sendError(err))
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("qmp: %s: %w (%v)", command, ErrClosed, c.Err())
		}
		if m.Kind == KindError {
			return nil, fmt.Errorf("qmp: %s: %w", command, m.Error)
		}
		return m.Return, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("qmp: %s: no reply: %w", command, ctx.Err())
	}
}

// register makes an id and the channel its reply will come on.
func (c *Client) register() (string, chan Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return "", nil, fmt.Errorf("%w (%v)", ErrClosed, c.err)
	}
	c.nextID++
	id := strconv.Quote("vhd-" + strconv.FormatUint(c.nextID, 10))
	ch := make(chan Message, 1)
	c.pending[id] = ch
	return id, ch, nil
}

func (c *Client) unregister(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, id)
}

// send writes one command as a single JSON object.
func (c *Client) send(command string, args any, id string) error {
	msg := struct {
		Execute   string          `json:"execute"`
		Arguments any             `json:"arguments,omitempty"`
		ID        json.RawMessage `json:"id"`
	}{command, args, json.RawMessage(id)}
	b, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode the command: %w", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err = c.conn.Write(append(b, '\n'))
	return err
}

// sendError says a write to a connection that has ended (QEMU closed
// its end, or the reader closed ours as it saw the end a moment after
// this command registered) is ErrClosed, as a reply lost the same way
// is: callers tell "QEMU is gone" from other failures by it.
func sendError(err error) error {
	for _, gone := range []error{net.ErrClosed, io.ErrClosedPipe, syscall.EPIPE, syscall.ECONNRESET} {
		if errors.Is(err, gone) {
			return fmt.Errorf("%w (%w)", ErrClosed, err)
		}
	}
	return err
}

// readLoop routes every message until the connection ends: replies to
// the command waiting for their id, events to the event stream.
func (c *Client) readLoop(dec *decoder) {
	var err error
	for {
		var m Message
		if m, err = dec.next(); err != nil {
			break
		}
		switch m.Kind {
		case KindEvent:
			c.deliverEvent(*m.Event)
		case KindReturn, KindError:
			c.deliverReply(m)
		default:
			c.log.Debug("qmp: ignoring a second greeting")
		}
	}
	c.end(err)
}

func (c *Client) deliverEvent(e Event) {
	select {
	case c.events <- e:
	default:
		c.mu.Lock()
		c.dropped++
		c.mu.Unlock()
		c.log.Warn("qmp: event dropped: nobody reads the event stream", "event", e.Name)
	}
}

func (c *Client) deliverReply(m Message) {
	c.mu.Lock()
	ch := c.pending[m.ID]
	delete(c.pending, m.ID)
	c.mu.Unlock()
	if ch == nil {
		// A command whose caller gave up, or one QEMU could not parse
		// (its error carries no id).
		c.log.Debug("qmp: a reply nobody waits for", "id", m.ID, "error", m.Error)
		return
	}
	ch <- m // buffered: one reply per id
}

// end records why the connection ended and fails every waiting command.
func (c *Client) end(err error) {
	if errors.Is(err, net.ErrClosed) {
		err = ErrClosed
	}
	c.conn.Close()
	c.mu.Lock()
	c.err = err
	pending := c.pending
	c.pending = map[string]chan Message{}
	c.mu.Unlock()
	for _, ch := range pending {
		close(ch)
	}
	close(c.events)
	close(c.done)
}

// decoder reads one JSON value at a time with no line-length limit, but
// refuses a message longer than MaxMessageBytes before buffering more.
type decoder struct {
	lim *limitReader
	dec *json.Decoder
}

func newDecoder(r io.Reader) *decoder {
	lim := &limitReader{r: r}
	return &decoder{lim: lim, dec: json.NewDecoder(lim)}
}

func (d *decoder) next() (Message, error) {
	// The decoder may hold bytes read ahead: the limit counts from where
	// this message starts.
	d.lim.max = d.dec.InputOffset() + MaxMessageBytes
	var raw json.RawMessage
	if err := d.dec.Decode(&raw); err != nil {
		if errors.Is(err, errTooLong) {
			return Message{}, fmt.Errorf("%w (%d bytes)", ErrTooLong, MaxMessageBytes)
		}
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Message{}, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		return Message{}, err
	}
	return ParseMessage(raw)
}

var errTooLong = errors.New("too long")

// limitReader fails once more than max bytes in all were read.
type limitReader struct {
	r    io.Reader
	read int64
	max  int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.read >= l.max {
		return 0, errTooLong
	}
	if room := l.max - l.read; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}
