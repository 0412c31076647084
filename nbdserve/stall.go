package nbdserve

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// A client holds server memory while a reply waits for it to read, and
// while a WRITE's data arrives. Both must keep moving: each piece of at
// most stallPiece bytes has StallTimeout to go through, so a client that
// reads or sends slowly is served (down to 4 MiB per 30 s by default)
// and one that stops is disconnected, which frees what it held.
const stallPiece = 4 << 20

// errConnClosing ends a wait for memory when the connection is closing.
var errConnClosing = errors.New("nbd: connection closing")

// send writes bufs to the client, each piece under its own deadline.
func (c *conn) send(bufs net.Buffers) error {
	for len(bufs) > 0 {
		piece := bufs
		if buffersLen(bufs) > stallPiece {
			piece, bufs = splitBuffers(bufs, stallPiece)
		} else {
			bufs = nil
		}
		c.raw.SetWriteDeadline(time.Now().Add(c.srv.stallTimeout()))
		if _, err := piece.WriteTo(c.nc); err != nil {
			return err
		}
	}
	return nil
}

func buffersLen(bufs net.Buffers) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// splitBuffers returns the first n bytes of bufs and the rest; the rest
// shares bufs' array.
func splitBuffers(bufs net.Buffers, n int) (head, rest net.Buffers) {
	for len(bufs) > 0 && n > 0 {
		b := bufs[0]
		if len(b) > n {
			head = append(head, b[:n])
			bufs[0] = b[n:]
			break
		}
		head = append(head, b)
		n -= len(b)
		bufs = bufs[1:]
	}
	return head, bufs
}

// readPayload reads a WRITE's data, each piece under the stall deadline.
// Data already buffered needs none.
func (c *conn) readPayload(p []byte) error {
	if c.br.Buffered() >= len(p) {
		_, err := io.ReadFull(c.br, p)
		return err
	}
	defer c.setReadDeadline(time.Time{})
	for len(p) > 0 {
		n := min(len(p), stallPiece)
		c.setReadDeadline(time.Now().Add(c.srv.stallTimeout()))
		if _, err := io.ReadFull(c.br, p[:n]); err != nil {
			if isTimeout(err) && !c.stopping.Load() {
				return fmt.Errorf("nbd: a WRITE's data stopped arriving for %v: %w", c.srv.stallTimeout(), err)
			}
			return err
		}
		p = p[n:]
	}
	return nil
}
