package nbdserve

import (
	"context"
	"time"
)

// Connection slots. Each listener serves at most MaxConnections at once.
// When it is full, a new client is not simply refused: that let 256
// connections that never finish negotiating (each for the handshake
// timeout, again and again) or that sit idle after NBD_OPT_GO (forever)
// lock every new client out. Instead the listener closes the connection
// that costs least to lose, and the new client takes its slot:
//
//  1. the one negotiating for the longest (no client has an export yet
//     on it; real clients negotiate in milliseconds), else
//  2. the one idle for the longest, if idle at least minEvictIdle, with
//     no request in flight. Its requests so far are answered and the
//     export flushed before it closes, as for NBD_CMD_DISC, so nothing
//     acknowledged is lost; its client sees a disconnect and may
//     reconnect.
//
// A connection with a request in flight is never closed: if every
// connection is working, the new client is refused. An idle client can
// be disconnected only while the listener is full, never by a timer, so
// a VM whose disk is quiet for hours keeps its connection unless the
// server runs out of slots. Slots are per listener, so a flood on a TCP
// port does not touch clients of the unix socket.

// minEvictIdle is how long a connection must have been idle to be
// closed for a new client: a client between two requests is not idle.
const minEvictIdle = 2 * time.Second

// evictWait bounds the wait for an evicted connection to flush and go.
const evictWait = 5 * time.Second

// listener is one Serve call's connection slots.
type listener struct {
	slots chan struct{}
}

// admit takes a slot of lis for a new client, closing the connection
// that costs least to lose when lis is full. It returns false when
// every connection is working (or the evicted one did not go in time).
func (s *Server) admit(ctx context.Context, lis *listener) bool {
	select {
	case lis.slots <- struct{}{}:
		return true
	default:
	}
	v := s.victim(lis)
	if v == nil {
		return false
	}
	v.log.Info("nbd: connection limit reached; closing this connection for a new client", "negotiating", v.negotiating.Load(), "idle", time.Since(time.Unix(0, v.active.Load())).Round(time.Millisecond))
	v.evict()
	t := time.NewTimer(evictWait)
	defer t.Stop()
	select {
	case lis.slots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// victim picks the connection of lis to close for a new client, or nil.
func (s *Server) victim(lis *listener) *conn {
	now := time.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *conn
	for c := range s.conns {
		if c.lis != lis || c.evicted.Load() || !c.evictable(now) {
			continue
		}
		if best == nil || c.evictsBefore(best) {
			best = c
		}
	}
	return best
}

// evictable: still negotiating, or idle long enough with nothing in
// flight.
func (c *conn) evictable(now int64) bool {
	if c.negotiating.Load() {
		return true
	}
	return len(c.slots) == 0 && now-c.active.Load() >= int64(minEvictIdle)
}

// evictsBefore orders victims: negotiating first, then the longest idle.
func (c *conn) evictsBefore(o *conn) bool {
	if cn, on := c.negotiating.Load(), o.negotiating.Load(); cn != on {
		return cn
	}
	return c.active.Load() < o.active.Load()
}

// evict closes the connection as a server shutdown would: a negotiation
// ends at once; a transmission stops reading, answers what it read,
// flushes and closes.
func (c *conn) evict() {
	c.evicted.Store(true)
	c.stopReading()
	if c.negotiating.Load() {
		c.raw.Close()
	}
}
