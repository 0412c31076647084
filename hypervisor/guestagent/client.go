package guestagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// DefaultTimeout bounds a call whose context has no deadline.
const DefaultTimeout = 5 * time.Second

// Client talks to one guest agent over the host end of its channel.
// Calls may come from several goroutines; they take turns, since the
// protocol has one command in flight at a time.
type Client struct {
	conn   net.Conn
	log    *slog.Logger
	closed atomic.Bool

	// turn holds one token: the caller that takes it owns the fields
	// below until it puts it back.
	turn   chan struct{}
	lr     *lineReader
	synced bool
	nextID uint64
}

// New talks to the agent over conn, which it owns from then on. Nothing
// is sent until the first call. log receives stale replies skipped;
// silent if nil.
func New(conn net.Conn, log *slog.Logger) *Client {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{conn: conn, log: log, turn: make(chan struct{}, 1), lr: newLineReader(conn),
		// A fresh start, so that ids of an earlier client on the same
		// stream are not taken for this one's; below 2^53, so that
		// every JSON reader keeps them exact.
		nextID: uint64(rand.Uint32()) << 16}
	c.turn <- struct{}{}
	return c
}

// Close closes the connection; calls fail with ErrClosed.
func (c *Client) Close() error {
	c.closed.Store(true)
	return c.conn.Close()
}

// Sync resynchronises the stream (guest-sync-delimited): nil means an
// agent answered.
func (c *Client) Sync(ctx context.Context) error {
	return c.call(ctx, "guest-sync-delimited", true, nil, nil)
}

// Ping asks the agent to answer (guest-ping), after resynchronising the
// stream if needed.
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, "guest-ping", false, nil, nil)
}

// FreezeFS freezes the guest's filesystems (guest-fsfreeze-freeze) and
// returns how many. Whatever it returns, the caller must ThawFS.
func (c *Client) FreezeFS(ctx context.Context) (int, error) {
	var n int
	return n, c.call(ctx, "guest-fsfreeze-freeze", false, nil, &n)
}

// ThawFS thaws them (guest-fsfreeze-thaw) and returns how many were
// frozen; 0 when none was.
func (c *Client) ThawFS(ctx context.Context) (int, error) {
	var n int
	return n, c.call(ctx, "guest-fsfreeze-thaw", false, nil, &n)
}

// FreezeStatus is "frozen" or "thawed" (guest-fsfreeze-status).
func (c *Client) FreezeStatus(ctx context.Context) (string, error) {
	var s string
	return s, c.call(ctx, "guest-fsfreeze-status", false, nil, &s)
}

// call runs one command (after a resynchronisation if the stream needs
// one; onlySync: that is the command) and decodes its value into out.
func (c *Client) call(ctx context.Context, cmd string, onlySync bool, args, out any) error {
	select {
	case <-c.turn:
	case <-ctx.Done():
		return fmt.Errorf("guest agent: %s: waiting for the call before it: %w", cmd, ctx.Err())
	}
	defer func() { c.turn <- struct{}{} }()
	if c.closed.Load() {
		return fmt.Errorf("guest agent: %s: %w", cmd, ErrClosed)
	}
	timeout, stop := c.deadline(ctx)
	defer stop()
	if onlySync || !c.synced {
		if err := c.sync(); err != nil {
			return c.failed(ctx, "guest-sync-delimited", timeout, err)
		}
		if onlySync {
			return nil
		}
	}
	r, err := c.exchange(cmd, args)
	if err != nil {
		return c.failed(ctx, cmd, timeout, err)
	}
	if r.Error != nil {
		return fmt.Errorf("guest agent: %s: %w", cmd, r.Error)
	}
	if out != nil {
		if err := json.Unmarshal(r.Return, out); err != nil {
			return fmt.Errorf("guest agent: %s: %w: its reply %.80s: %v", cmd, ErrProtocol, r.Return, err)
		}
	}
	return nil
}

// deadline sets the connection's deadline from ctx (DefaultTimeout if
// it has none) and cuts it short if ctx is cancelled before; stop undoes
// the watch, and returns once it cannot fire any more.
func (c *Client) deadline(ctx context.Context) (time.Duration, func()) {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Now().Add(DefaultTimeout)
	}
	c.conn.SetDeadline(d)
	fired := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		c.conn.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	return time.Until(d), func() {
		if !cancel() {
			<-fired
		}
	}
}

// failed marks the stream unsynchronised after a failure of the
// connection (the next call resynchronises; a partial line read is
// dropped) and says what happened.
func (c *Client) failed(ctx context.Context, cmd string, timeout time.Duration, err error) error {
	c.synced = false
	c.lr = newLineReader(c.conn)
	switch {
	case c.closed.Load():
		return fmt.Errorf("guest agent: %s: %w", cmd, ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("guest agent: %s: no answer: %w", cmd, ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The connection's deadline is the context's (or the default):
		// said the same way whichever timer fired first.
		return fmt.Errorf("guest agent: %s: no answer within %v (is qemu-guest-agent running in the guest?): %w", cmd, timeout.Round(time.Millisecond), context.DeadlineExceeded)
	}
	return fmt.Errorf("guest agent: %s: %w", cmd, err)
}

// sync sends the sentinel and guest-sync-delimited with a fresh id, and
// skips everything until the agent's delimited reply carrying that id.
func (c *Client) sync() error {
	id := c.newID()
	msg := fmt.Sprintf(`{"execute": "guest-sync-delimited", "arguments": {"id": %d}}`, id)
	if err := c.write(append([]byte{Sentinel}, msg...)); err != nil {
		return err
	}
	for {
		line, err := c.lr.next()
		if errors.Is(err, ErrTooLong) {
			continue
		}
		if err != nil {
			return err
		}
		r, err := ParseReply(line)
		if err != nil || !r.Delimited {
			c.log.Debug("guest agent: skipping a line before the sync reply", "line", string(line))
			continue
		}
		var got uint64
		if json.Unmarshal(r.Return, &got) == nil && got == id {
			c.synced = true
			return nil
		}
	}
}

// exchange sends one command on a synchronised stream and reads its
// reply, skipping replies that carry another id (stale ones).
func (c *Client) exchange(cmd string, args any) (Reply, error) {
	id := c.newID()
	b, err := json.Marshal(struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        uint64 `json:"id"`
	}{cmd, args, id})
	if err != nil {
		return Reply{}, err
	}
	if err := c.write(b); err != nil {
		return Reply{}, err
	}
	want := strconv.FormatUint(id, 10)
	for {
		line, err := c.lr.next()
		if err != nil {
			return Reply{}, err
		}
		r, err := ParseReply(line)
		if err != nil {
			return Reply{}, err
		}
		if r.Delimited || (r.ID != "" && r.ID != want) {
			c.log.Debug("guest agent: skipping a stale reply", "line", string(line))
			continue
		}
		return r, nil
	}
}

func (c *Client) write(b []byte) error {
	_, err := c.conn.Write(append(b, '\n'))
	return err
}

func (c *Client) newID() uint64 {
	c.nextID++
	return c.nextID
}
