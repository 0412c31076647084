package nbdserve

import (
	"sync/atomic"
	"time"
)

// ExportStats is a snapshot of an export's counters since it was first
// served. Its JSON shape is stable (`vhd ctl status --json` prints it):
// fields may be added, never renamed or removed. Counters are read one by
// one while requests go on, so under load they may be a few requests
// apart from each other.
type ExportStats struct {
	// ClientsConnected is how many connections use the export now (past
	// negotiation, until they end).
	ClientsConnected int64 `json:"clients_connected"`
	// ConnectionsTotal is how many connections have used it.
	ConnectionsTotal uint64 `json:"connections_total"`
	// Requests and Errors add up every command's.
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	// BytesRead is the data successful READs returned (holes included);
	// BytesWritten the data successful WRITEs wrote (not zeroes or trims).
	BytesRead    uint64 `json:"bytes_read"`
	BytesWritten uint64 `json:"bytes_written"`
	// Latency is over every request, whatever its command.
	Latency  LatencyStats  `json:"latency"`
	Commands CommandsStats `json:"commands"`
}

// CommandsStats has one entry per NBD command. DISC is no request (it
// gets no reply); Other counts commands the server does not know (each
// answered EINVAL).
type CommandsStats struct {
	Read        CommandStats `json:"read"`
	Write       CommandStats `json:"write"`
	Flush       CommandStats `json:"flush"`
	Trim        CommandStats `json:"trim"`
	WriteZeroes CommandStats `json:"write_zeroes"`
	BlockStatus CommandStats `json:"block_status"`
	Cache       CommandStats `json:"cache"`
	Other       CommandStats `json:"other"`
}

// CommandStats counts the requests of one command.
type CommandStats struct {
	// Requests answered, successfully or not (a reply lost because the
	// connection broke counts too: the request was carried out).
	Requests uint64 `json:"requests"`
	// Errors is how many of them got an error reply.
	Errors uint64 `json:"errors"`
	// Bytes is the length of the successful requests' ranges: data read
	// or written, trimmed, zeroed or cached; 0 for FLUSH and
	// BLOCK_STATUS, which move no data.
	Bytes   uint64       `json:"bytes"`
	Latency LatencyStats `json:"latency"`
}

// LatencyStats summarizes request latency, in microseconds: the time from
// a request's header being read to its reply being written to the socket.
// It includes waiting for an in-flight slot or for memory, and a WRITE's
// data arriving. Percentiles are accurate to 6.25% (histogram.go) and
// never below the true value; all are 0 before the first request.
type LatencyStats struct {
	P50Micros  float64 `json:"p50_us"`
	P90Micros  float64 `json:"p90_us"`
	P99Micros  float64 `json:"p99_us"`
	MaxMicros  float64 `json:"max_us"`
	MeanMicros float64 `json:"mean_us"`
}

// Command kinds, indexes of exportStats.commands.
const (
	kindRead = iota
	kindWrite
	kindFlush
	kindTrim
	kindWriteZeroes
	kindBlockStatus
	kindCache
	kindOther
	numKinds
)

func kindOf(typ uint16) int {
	switch typ {
	case cmdRead:
		return kindRead
	case cmdWrite:
		return kindWrite
	case cmdFlush:
		return kindFlush
	case cmdTrim:
		return kindTrim
	case cmdWriteZeroes:
		return kindWriteZeroes
	case cmdBlockStatus:
		return kindBlockStatus
	case cmdCache:
		return kindCache
	}
	return kindOther
}

// movesData tells whether a command's length counts as bytes moved.
func movesData(kind int) bool {
	return kind != kindFlush && kind != kindBlockStatus && kind != kindOther
}

// exportStats are an export's live counters: atomics only, so every
// connection records into them at once with no lock.
type exportStats struct {
	clients     atomic.Int64
	connections atomic.Uint64
	commands    [numKinds]commandCounters
}

// commandCounters count one command. Its request count is the number of
// latencies recorded, which saves a counter on the hot path.
type commandCounters struct {
	errors  atomic.Uint64
	bytes   atomic.Uint64
	latency histogram
}

// connected counts a connection that begins transmission on the export;
// disconnected is called when it ends.
func (s *exportStats) connected() {
	s.clients.Add(1)
	s.connections.Add(1)
}

func (s *exportStats) disconnected() { s.clients.Add(-1) }

// record counts a request whose reply has been written (or dropped, when
// the connection broke), at time now.
func (s *exportStats) record(r *request, now time.Duration) {
	k := kindOf(r.typ)
	cc := &s.commands[k]
	cc.latency.record(now - r.start)
	if r.errno != 0 {
		cc.errors.Add(1)
	} else if movesData(k) {
		cc.bytes.Add(uint64(r.length))
	}
}

// clockBase anchors request timestamps: durations since it are taken on
// the monotonic clock, which wall clock steps do not move.
var clockBase = time.Now()

// Stats returns a snapshot of the export's counters since it was first
// served (by any Server).
func (e *Export) Stats() ExportStats {
	s := &e.stats
	out := ExportStats{
		ClientsConnected: s.clients.Load(),
		ConnectionsTotal: s.connections.Load(),
	}
	var all latencyCounts
	cmds := []*CommandStats{
		kindRead: &out.Commands.Read, kindWrite: &out.Commands.Write,
		kindFlush: &out.Commands.Flush, kindTrim: &out.Commands.Trim,
		kindWriteZeroes: &out.Commands.WriteZeroes, kindBlockStatus: &out.Commands.BlockStatus,
		kindCache: &out.Commands.Cache, kindOther: &out.Commands.Other,
	}
	for k, cs := range cmds {
		*cs = s.commands[k].snapshot(&all)
		out.Requests += cs.Requests
		out.Errors += cs.Errors
	}
	out.BytesRead = out.Commands.Read.Bytes
	out.BytesWritten = out.Commands.Write.Bytes
	out.Latency = all.summary()
	return out
}

// snapshot reads one command's counters, and adds its latencies to all.
// Errors and bytes are read before the latencies, and record counts them
// after, so a snapshot never shows more errors than requests.
func (cc *commandCounters) snapshot(all *latencyCounts) CommandStats {
	cs := CommandStats{Errors: cc.errors.Load(), Bytes: cc.bytes.Load()}
	var lat latencyCounts
	cc.latency.addTo(&lat)
	all.add(&lat)
	cs.Requests = lat.count
	cs.Latency = lat.summary()
	return cs
}

// Stats returns a snapshot of every export's counters, by name. It may be
// called at any time, also while Serve runs.
func (s *Server) Stats() map[string]ExportStats {
	out := make(map[string]ExportStats)
	for _, name := range s.names() {
		if e, ok := s.lookup(name); ok {
			out[name] = e.Stats()
		}
	}
	return out
}
