// Package nbdserve serves engine.Disks over the NBD protocol
// (NetworkBlockDevice/nbd doc/proto.md) on any net.Listener: unix
// sockets, TCP, or anything else that carries a byte stream.
//
//	srv := &nbdserve.Server{
//		Exports: map[string]*nbdserve.Export{"disk": {Name: "disk", Disk: img}},
//		Default: "disk", // what the empty export name selects
//	}
//	err := srv.Serve(ctx, listener) // returns once ctx ends and connections drain
//
// # Exports at run time
//
// Exports can be added and removed while Serve runs (exports.go):
// AddExport offers a new one to clients at once (LIST shows it, GO opens
// it); RemoveExport takes one out of the table, so new clients are told
// it is unknown, and ends the connections using it as shutdown does:
// they stop reading requests, answer those already read, flush the disk
// and close; after ShutdownGrace the ones still busy (a client taking no
// replies) are closed. It returns once no request touches the disk, so
// the caller may close it. The Exports field is only the table at start.
//
// # Negotiation
//
// Fixed newstyle only. Options: GO and INFO (replying NBD_INFO_EXPORT,
// NAME and DESCRIPTION when asked, and BLOCK_SIZE always: minimum 1,
// preferred 4096, maximum MaxPayload), EXPORT_NAME, LIST, ABORT,
// STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT (contexts:
// base:allocation, and vhdkit:changed on an export whose disk is a
// ChangeLister), and STARTTLS when TLSConfig is set.
// Anything else gets NBD_REP_ERR_UNSUP; an unknown export name gets
// NBD_REP_ERR_UNKNOWN (EXPORT_NAME, which cannot carry an error, ends
// the connection instead). Option data longer than 64 KiB ends the
// connection before it is read; names and queries are at most 4096
// bytes; a negotiation is at most 1024 options and HandshakeTimeout (10
// s) long.
//
// With TLSConfig set the server runs in FORCEDTLS mode: every option but
// STARTTLS and ABORT is answered NBD_REP_ERR_TLS_REQD until the client
// has started TLS, and state negotiated before STARTTLS is forgotten.
// Client certificates are checked as TLSConfig says (ClientAuth).
//
// # Connections
//
// Each listener (each Serve call) serves at most MaxConnections (256)
// at once. When it is full, a new client takes the slot of the
// connection that costs least to lose: the one negotiating longest, else
// the one idle longest (at least 2 s, with no request in flight), which
// stops reading, answers what it read, flushes its export and closes, as
// for DISC. Only when every connection has a request in flight is the
// new client refused. So idle or half-negotiated connections cannot
// lock clients out, and an idle client is disconnected only while the
// listener is full, never by a timer (evict.go argues the choice).
//
// # Transmission flags
//
// HAS_FLAGS, SEND_FLUSH, SEND_CACHE and CAN_MULTI_CONN always; READ_ONLY
// for a read-only disk, otherwise SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES
// and SEND_FAST_ZERO; SEND_DF once structured replies are negotiated.
// CAN_MULTI_CONN is true because every connection to an export shares
// its one Disk, whose Flush makes durable every write that returned
// before it, whichever connection made it.
//
// # Commands
//
//	READ          structured: the disk's extent map is consulted and runs
//	              of at least 4 KiB that read as zeros go out as
//	              OFFSET_HOLE chunks, data as OFFSET_DATA; DF gets one
//	              data chunk. All data is read before the first chunk is
//	              sent, so an error is always a clean error reply.
//	WRITE (+FUA)  Disk.WriteAt, then Disk.Flush when FUA is set.
//	FLUSH         Disk.Flush: replies only once every write already
//	              answered (on any connection) is durable.
//	TRIM          Disk.Trim (frees whole blocks of a dynamic image).
//	WRITE_ZEROES  Disk.Zero; NO_HOLE keeps the range allocated
//	              (engine.ZeroKeepAllocated). FAST_ZERO succeeds only
//	              when the disk says no data has to be written
//	              (engine.FastZeroer): no NO_HOLE, and on a fixed image
//	              whole sectors (punched out of the host file), on a
//	              dynamic or differencing one (or a chain, whose top
//	              answers) whole blocks with no data below them and
//	              unallocated parts of blocks. Otherwise it fails at once
//	              with ENOTSUP, and the client writes the zeros itself.
//	BLOCK_STATUS  a chunk per context selected, base:allocation first.
//	              base:allocation from Disk.Extents: holes are HOLE|ZERO
//	              (HOLE alone cannot happen; a bare differencing image's
//	              holes are reported as data, since they show the
//	              parent), zero extents ZERO, data 0. vhdkit:changed
//	              from ChangeLister.ChangedExtents: CHANGED (1) where
//	              the extent was written since the previous backup's
//	              point, 0 where it reads as it did then (changes.go).
//	              At most 1024 descriptors per context (one with
//	              REQ_ONE); the client asks again from where a chunk
//	              stopped.
//	CACHE         a hint; succeeds without doing anything.
//	DISC          stop reading, finish what was read, flush, close.
//
// # Errors
//
// A failed request gets an error reply and the connection carries on:
// EINVAL for unknown commands and flags, reads, trims, caches and block
// status queries past the end, READ/WRITE/CACHE longer than MaxPayload
// (a WRITE's data is read and dropped, so the stream stays in step);
// ENOSPC for writes and zeroes past the end and for a full host disk
// (ENOSPC, EDQUOT, EFBIG); EPERM for writes, trims and zeroes to a
// read-only export; EIO for I/O failures and damaged images. With
// structured replies the error comes with a short message; the full
// error (which may name server paths) goes to Logger only.
//
// A panic inside a request handler or the disk becomes an EIO reply and
// a log line with the stack; the server and the connection live on.
//
// The connection is dropped only when the stream itself cannot be
// trusted: a bad request or option magic, unknown client flags, option
// data over the limit, a failed write to the socket, or a client stalled
// past StallTimeout. Other connections never notice.
//
// # Concurrency and memory
//
// Each connection has one reader goroutine. It reads a request (and a
// WRITE's data) and hands it to a worker goroutine (workers are started
// as needed and live as long as the connection), so requests run in
// parallel and are answered in the order they finish; a small READ or
// WRITE with no other request waiting in the socket buffer runs in the
// reader itself, which saves a goroutine handoff at queue depth one. At
// most MaxInFlight requests of a connection run at once.
//
// Request data (a READ's data until its reply is sent, a WRITE's until
// it is on the disk) comes out of one server-wide MemoryBudget (128 MiB
// by default), of which one connection may hold at most MaxBufferBytes
// (half). A request that does not fit waits in line, in arrival order,
// and its connection is not read meanwhile, which pushes back on that
// client; a request larger than the whole budget waits for all of it.
// So memory does not grow with the number of clients: 8 clients that
// queue 32 MiB reads and read no reply hold 128 MiB, not 8 times 96 MiB.
// A client that stops reading holds its part until StallTimeout (30 s):
// every piece of at most 4 MiB of a reply must be taken, and of a
// WRITE's data must arrive, within it, or the connection is closed. A
// client that reads its replies therefore waits at most until the
// stalled clients ahead of it in line are cut off. Buffers come from
// size-class pools.
//
// Replies never interleave: a finished request queues its reply, and the
// first handler to find nobody writing becomes the writer, sending every
// queued reply (headers and data) in one writev before releasing those
// requests. There is no writer goroutine to wake.
//
// # Shutdown
//
// When Serve's context ends it closes the listener, makes every
// connection stop reading at the next request (a request still waiting
// for memory is answered ESHUTDOWN), and waits up to ShutdownGrace (5 s)
// for the requests already read to be answered. Connections still busy
// then (a client that takes no replies) are closed: their requests
// finish on the disk and their replies are dropped. Each writable export
// a connection was using is flushed as the connection ends. Closing the
// disks is the caller's job, after Serve returns.
//
// # Statistics
//
// Every export counts, from the first time it is served: the clients
// connected now (connections past negotiation) and in total, and per
// command (READ, WRITE, FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS, CACHE,
// and unknown ones) the requests answered, the errors replied and the
// bytes of the successful ones, and a histogram of their latency: from
// the request's header being read to its reply being written, so waits
// for an in-flight slot or for memory are in it. Export.Stats and
// Server.Stats return a snapshot (ExportStats, whose JSON shape is
// stable) with p50, p90, p99, max and mean latency, in microseconds, per
// command and for all together. Recording is a few atomic additions per
// request into fixed arrays (log-linear buckets, 16 per power of two, so
// a percentile is at most 6.25% above the true one): no lock, no
// allocation, and no measurable cost at 4 KiB random reads at queue depth
// 32. A request counts once its reply is written; a connection counts
// as a client until its last request is counted.
//
// # Logging
//
// Through Logger, silent when nil: connection problems at Info or Warn,
// I/O failures at Warn, panics at Error, everything else at Debug.
package nbdserve
