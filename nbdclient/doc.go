// Package nbdclient is an NBD client (NetworkBlockDevice/nbd
// doc/proto.md) for reading exports: what `vhd backup pull` copies a
// backup with, and (Disk: an export as an engine.Disk) what `vhd
// convert` reads an NBD URI with. It speaks to any server: nbdserve,
// nbdkit, qemu-nbd.
//
//	c, err := nbdclient.Dial(ctx, "nbd+unix:///disk?socket=/run/vhd.sock",
//		nbdclient.Options{MetaContexts: []string{"base:allocation"}})
//	st, err := c.BlockStatus(ctx, 0, 1<<30)  // descriptors per context
//	err = c.ReadAt(ctx, buf, off)            // holes read as zeros
//	c.Close()
//
// # Negotiation
//
// Fixed newstyle only (an oldstyle server is refused, naming it). For
// an nbds URI, STARTTLS comes first, before any other option as the spec
// asks, and the rest runs over TLS; a server that does not offer TLS
// (NBD_REP_ERR_UNSUP or _POLICY) ends the negotiation: an nbds URI never
// goes on in plaintext. STRUCTURED_REPLY is asked for, then SET_META_CONTEXT with the contexts
// the caller wants (Info.Contexts says which the server had), then GO
// with requests for the description and block sizes; a server without
// GO is opened with EXPORT_NAME. A server that requires TLS of an nbd://
// URI is refused with an error saying to write nbds://. The whole
// negotiation runs under Options.HandshakeTimeout (10 s).
//
// # TLS
//
// TLS 1.2 or later; the server's certificate is verified against a CA
// file or the system's pool, for the URI's host (localhost over a unix
// socket) unless a server name is given; a client certificate is
// presented when given (servers that check them). TLSFiles name the
// files, taken from the URI's tls-certificates=DIR (libnbd's ca-cert.pem,
// client-cert.pem, client-key.pem) when not given. A failure says which
// check failed: the server's CA, its name, its validity, or the server
// refusing our certificate (or its absence).
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
// FuzzReplies and FuzzHandshake (plain and as over nbds) feed arbitrary
// bytes to both halves; FuzzParseURI feeds arbitrary URIs.
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
