// Package nbdclient is an NBD client (NetworkBlockDevice/nbd
// doc/proto.md) for reading exports: what `vhd backup pull` copies a
// backup with. It speaks to any server: nbdserve, nbdkit, qemu-nbd.
//
//	c, err := nbdclient.Dial(ctx, "nbd+unix:///disk?socket=/run/vhd.sock",
//		nbdclient.Options{MetaContexts: []string{"base:allocation"}})
//	st, err := c.BlockStatus(ctx, 0, 1<<30)  // descriptors per context
//	err = c.ReadAt(ctx, buf, off)            // holes read as zeros
//	c.Close()
//
// # Negotiation
//
// Fixed newstyle only (an oldstyle server is refused, naming it).
// STRUCTURED_REPLY is asked for, then SET_META_CONTEXT with the contexts
// the caller wants (Info.Contexts says which the server had), then GO
// with requests for the description and block sizes; a server without
// GO is opened with EXPORT_NAME. TLS is not spoken: a server that
// requires it is refused with an error saying so. The whole negotiation
// runs under Options.HandshakeTimeout (10 s).
//
// # Transmission
//
// ReadAt and BlockStatus may be called from many goroutines at once:
// requests are pipelined (at most Options.MaxInFlight, 16, on the wire;
// more wait for a slot) and their replies, which a server may send in
// any order and in several chunks, are matched by handle. One reader
// goroutine per connection reads replies; a READ's data goes straight
// from the socket buffer into the caller's buffer, and OFFSET_HOLE
// chunks are zeroed there. A READ succeeds only when its chunks cover it
// exactly once.
//
// # What the server cannot make it do
//
// Every length a server sends is checked against the request it answers
// before anything is read or allocated: a data or hole chunk must lie
// inside its READ, a BLOCK_STATUS chunk is at most MaxStatusPayload (4
// MiB, which holds an honest answer about MaxStatusLength, 256 MiB, at
// 512-byte granularity), an error chunk at most 4 KiB of message, an
// option reply at most 64 KiB. Overlapping chunks, chunks for handles no
// request has, contexts not selected, unknown chunk types and bad magics
// end the connection with an error that wraps ErrProtocol; an error the
// server replies to one request is a *ServerError and the connection
// carries on. Server messages are reduced to one printable line.
// FuzzReplies and FuzzHandshake feed arbitrary bytes to both halves.
//
// # Deadlines
//
// A connection with requests in flight that receives nothing for
// Options.StallTimeout (60 s) ends with ErrStalled, as does one whose
// server takes no request bytes for that long; an idle connection never
// times out. When a call's context ends, the connection is closed (a
// request cannot be withdrawn from an NBD server, and its reply could
// otherwise still land in the caller's buffer): every call on it then
// fails, and the caller dials again.
package nbdclient
