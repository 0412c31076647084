package nbdclient

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// The reply reader: one goroutine per connection reads replies as they
// come, in any order, and hands each to the request it answers. A READ's
// data goes straight from the socket buffer into the caller's buffer;
// everything else it reads is bounded before it is allocated
// (checkChunk). Anything the protocol does not allow ends the connection
// and every request in flight with an ErrProtocol error.

// readReplies runs until the connection ends, then ends every call in
// flight with the reason.
func (c *Conn) readReplies() {
	err := c.replyLoop()
	c.fail(err)
	c.mu.Lock()
	calls, why := c.calls, c.err
	c.calls = map[uint64]*call{}
	c.mu.Unlock()
	for _, cl := range calls {
		cl.err = why
		close(cl.done)
	}
	close(c.readerDone)
}

func (c *Conn) replyLoop() error {
	for {
		var m [4]byte
		if _, err := io.ReadFull(c.br, m[:]); err != nil {
			return c.readErr(err)
		}
		var err error
		switch magic := binary.BigEndian.Uint32(m[:]); magic {
		case simpleMagic:
			err = c.simpleReply()
		case structuredMagic:
			err = c.chunk()
		default:
			return protoErr("reply magic %#x", magic)
		}
		if err != nil {
			return err
		}
	}
}

// readErr says why a read from the server failed.
func (c *Conn) readErr(err error) error {
	c.mu.Lock()
	ended := c.err
	c.mu.Unlock()
	switch {
	case ended != nil:
		return ended
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ErrStalled
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return errors.New("nbd: the server closed the connection")
	}
	return err
}

// lookup finds the call a reply answers.
func (c *Conn) lookup(handle uint64) (*call, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.calls[handle]
	if !ok {
		return nil, protoErr("reply to handle %d, which no request in flight has", handle)
	}
	return cl, nil
}

// progress pushes the stall deadline on after a reply chunk.
func (c *Conn) progress() {
	c.mu.Lock()
	c.nc.SetReadDeadline(time.Now().Add(c.stall))
	c.mu.Unlock()
}

// finish ends the call for handle with err. With nothing left in flight
// the read deadline goes: an idle connection never stalls.
func (c *Conn) finish(handle uint64, cl *call, err error) {
	c.mu.Lock()
	delete(c.calls, handle)
	if len(c.calls) == 0 {
		c.nc.SetReadDeadline(time.Time{})
	} else {
		c.nc.SetReadDeadline(time.Now().Add(c.stall))
	}
	c.mu.Unlock()
	cl.err = err
	close(cl.done)
}

// simpleReply reads the rest of a simple reply: an error, or success
// with a READ's data when structured replies are off.
func (c *Conn) simpleReply() error {
	var b [simpleHdrSize - 4]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return c.readErr(err)
	}
	errno, handle := binary.BigEndian.Uint32(b[0:]), binary.BigEndian.Uint64(b[4:])
	cl, err := c.lookup(handle)
	if err != nil {
		return err
	}
	switch {
	case errno != 0:
		c.finish(handle, cl, &ServerError{Errno: errno})
		return nil
	case cl.cmd == cmdBlockStatus:
		return protoErr("a simple reply carries no block status")
	case cl.cmd == cmdRead:
		if _, err := io.ReadFull(c.br, cl.buf); err != nil {
			return c.readErr(err)
		}
	}
	c.finish(handle, cl, nil)
	return nil
}

// chunk reads one structured reply chunk.
func (c *Conn) chunk() error {
	var b [chunkHdrSize - 4]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return c.readErr(err)
	}
	h := parseChunkHeader(&b)
	cl, err := c.lookup(h.handle)
	if err != nil {
		return err
	}
	if err := checkChunk(h, cl.cmd, cl.n); err != nil {
		return err
	}
	if err := c.chunkPayload(h, cl); err != nil {
		return err
	}
	c.progress()
	if h.flags&replyFlagDone == 0 {
		return nil
	}
	if cl.err == nil && cl.cmd == cmdRead && !cl.covered.complete(int64(cl.n)) {
		return protoErr("READ of %d+%d answered without covering it", cl.off, cl.n)
	}
	c.finish(h.handle, cl, cl.err)
	return nil
}

// chunkPayload reads a checked chunk's payload into its call.
func (c *Conn) chunkPayload(h chunkHeader, cl *call) error {
	switch h.typ {
	case replyNone:
		return nil
	case replyOffsetData:
		var ob [8]byte
		if _, err := io.ReadFull(c.br, ob[:]); err != nil {
			return c.readErr(err)
		}
		lo, hi, err := readPiece(binary.BigEndian.Uint64(ob[:]), uint64(h.length-8), cl.off, cl.n)
		if err == nil {
			err = cl.covered.add(lo, hi)
		}
		if err != nil {
			return err
		}
		if _, err := io.ReadFull(c.br, cl.buf[lo:hi]); err != nil {
			return c.readErr(err)
		}
		return nil
	case replyOffsetHole:
		var hb [12]byte
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			return c.readErr(err)
		}
		lo, hi, err := readPiece(binary.BigEndian.Uint64(hb[:]), uint64(binary.BigEndian.Uint32(hb[8:])), cl.off, cl.n)
		if err == nil {
			err = cl.covered.add(lo, hi)
		}
		if err != nil {
			return err
		}
		clear(cl.buf[lo:hi])
		return nil
	}
	p := make([]byte, h.length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return c.readErr(err)
	}
	if h.typ == replyBlockStatus {
		return c.statusChunk(cl, p)
	}
	se, err := parseError(h.typ, p)
	if err != nil {
		return err
	}
	if cl.err == nil {
		cl.err = se
	}
	return nil
}

// statusChunk records one context's descriptors.
func (c *Conn) statusChunk(cl *call, p []byte) error {
	id, ext, err := parseStatus(p)
	if err != nil {
		return err
	}
	known := false
	for _, v := range c.info.Contexts {
		known = known || v == id
	}
	if _, dup := cl.status[id]; !known || dup {
		return protoErr("BLOCK_STATUS chunk for context id %d (not selected, or twice)", id)
	}
	cl.status[id] = ext
	return nil
}
