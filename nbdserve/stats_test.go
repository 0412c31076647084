package nbdserve

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitIdle waits until no connection uses the export. A connection stops
// counting as connected only after its last request is recorded, so the
// counters are final then; a client may have exited a moment earlier.
func waitIdle(t *testing.T, e *Export) ExportStats {
	t.Helper()
	return waitClients(t, e, 0)
}

// waitClients waits until the export counts n clients. The server counts
// a client just after it sends the GO reply, so a client that has read
// that reply may look at the stats a moment before they show it.
func waitClients(t *testing.T, e *Export, n int64) ExportStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.Stats()
		if st.ClientsConnected == n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("export has %d clients, want %d", st.ClientsConnected, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkLatency checks that a summary of n requests is plausible: ordered,
// positive, and below the test's own duration.
func checkLatency(t *testing.T, what string, l LatencyStats, n uint64, limit time.Duration) {
	t.Helper()
	if n == 0 {
		if l != (LatencyStats{}) {
			t.Errorf("%s: no requests, latency %+v", what, l)
		}
		return
	}
	ordered := 0 < l.P50Micros && l.P50Micros <= l.P90Micros && l.P90Micros <= l.P99Micros && l.P99Micros <= l.MaxMicros
	if !ordered || l.MeanMicros <= 0 || l.MeanMicros > l.MaxMicros || l.MaxMicros > float64(limit.Microseconds()) {
		t.Errorf("%s: implausible latency %+v (limit %v)", what, l, limit)
	}
}

// counters is st without latencies, which tests compare exactly, after
// checking the latencies are plausible.
func counters(t *testing.T, st ExportStats, limit time.Duration) ExportStats {
	t.Helper()
	checkLatency(t, "all", st.Latency, st.Requests, limit)
	st.Latency = LatencyStats{}
	cmds := map[string]*CommandStats{
		"read": &st.Commands.Read, "write": &st.Commands.Write, "flush": &st.Commands.Flush,
		"trim": &st.Commands.Trim, "write_zeroes": &st.Commands.WriteZeroes,
		"block_status": &st.Commands.BlockStatus, "cache": &st.Commands.Cache, "other": &st.Commands.Other,
	}
	for name, cs := range cmds {
		checkLatency(t, name, cs.Latency, cs.Requests, limit)
		cs.Latency = LatencyStats{}
	}
	return st
}

// TestStatsCountNbdsh does known I/O with libnbd and finds every request,
// error and byte counted, per command.
func TestStatsCountNbdsh(t *testing.T) {
	need(t, "nbdsh")
	start := time.Now()
	s := serveImage(t, 16<<20, false, nil)
	e := s.srv.Exports["disk"]
	if st := e.Stats(); st != (ExportStats{}) {
		t.Fatalf("stats before any client: %+v", st)
	}
	run(t, "nbdsh", "--base-allocation", "-u", s.uri(), "-c", nbdshPrelude+`
for i in range(10):
    h.pread(4096, i * 4096)
h.pread(65536, 0)
expect("read past end", lambda: h.pread(4096, size - 512), "EINVAL")
expect("oversize read", lambda: h.pread(33 << 20, 0), "EINVAL")
for i in range(5):
    h.pwrite(b"x" * 8192, i * 8192)
h.pwrite(b"y" * 4096, 1 << 20, nbd.CMD_FLAG_FUA)
expect("write past end", lambda: h.pwrite(b"x" * 1024, size - 512), "ENOSPC")
for i in range(3):
    h.flush()
h.trim(1 << 20, 2 << 20)
h.trim(1 << 20, 4 << 20)
for i in range(4):
    h.zero(65536, 8 << 20 + i * 65536)
expect("fast zero over data", lambda: h.zero(512, 0, nbd.CMD_FLAG_FAST_ZERO), "ENOTSUP")
for i in range(6):
    h.block_status(1 << 20, 0, lambda *a: 0)
h.cache(4096, 0)
h.cache(4096, 4096)
`)
	got := counters(t, waitIdle(t, e), time.Since(start))
	want := ExportStats{
		ConnectionsTotal: 1,
		Requests:         38,
		Errors:           4,
		BytesRead:        10*4096 + 65536,
		BytesWritten:     5*8192 + 4096,
		Commands: CommandsStats{
			Read:        CommandStats{Requests: 13, Errors: 2, Bytes: 10*4096 + 65536},
			Write:       CommandStats{Requests: 7, Errors: 1, Bytes: 5*8192 + 4096},
			Flush:       CommandStats{Requests: 3},
			Trim:        CommandStats{Requests: 2, Bytes: 2 << 20},
			WriteZeroes: CommandStats{Requests: 5, Errors: 1, Bytes: 4 * 65536},
			BlockStatus: CommandStats{Requests: 6},
			Cache:       CommandStats{Requests: 2, Bytes: 8192},
		},
	}
	if got != want {
		t.Errorf("counters after nbdsh:\n got %+v\nwant %+v", got, want)
	}
	s.closeAndCheck()
}

// TestStatsClients: a connection counts as a client from GO to its end;
// a connection that only lists exports is none. Unknown commands count as
// other.
func TestStatsClients(t *testing.T) {
	srv := oneExport(newMemDisk(1 << 20))
	e := srv.Exports["d"]
	path, _ := testServer(t, srv)
	lister := dial(t, path)
	lister.option(optList, nil)
	a, b := dial(t, path), dial(t, path)
	a.open("d", false)
	b.open("", true) // the default export is the same one
	if st := waitClients(t, e, 2); st.ConnectionsTotal != 2 {
		t.Fatalf("two clients: connected %d, total %d", st.ClientsConnected, st.ConnectionsTotal)
	}
	a.request(0, 99, 1, 0, 0, nil)
	if r := a.simpleReply(0); r.errno != errInval {
		t.Fatalf("unknown command: errno %d", r.errno)
	}
	a.request(0, cmdDisc, 2, 0, 0, nil)
	a.expectClosed()
	b.nc.Close()
	lister.nc.Close()
	st := waitIdle(t, e)
	want := CommandStats{Requests: 1, Errors: 1}
	if st.ConnectionsTotal != 2 || st.Requests != 1 || st.Errors != 1 {
		t.Errorf("after both left: %+v", st)
	}
	if got := st.Commands.Other; got.Requests != want.Requests || got.Errors != want.Errors || got.Bytes != 0 {
		t.Errorf("unknown command counted as %+v", got)
	}
	if all := srv.Stats(); len(all) != 1 || all["d"] != st {
		t.Errorf("Server.Stats: %+v, want only d: %+v", all, st)
	}
}

// TestStatsParallelFio: four fio jobs on four connections at queue depth
// 32 write, then read, known amounts, while snapshots are taken all the
// time (for the race detector, and to see a snapshot never goes back).
func TestStatsParallelFio(t *testing.T) {
	need(t, "fio")
	start := time.Now()
	s := serveImage(t, 64<<20, false, nil)
	e := s.srv.Exports["disk"]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { watchStats(t, e, stop) })
	fio := func(rw string) {
		out := run(t, "fio", "--name=stats", "--ioengine=nbd", "--uri="+s.uri(),
			"--rw="+rw, "--bs=4k", "--iodepth=32", "--numjobs=4",
			"--size=4M", "--offset_increment=4M", "--group_reporting")
		if !strings.Contains(out, "err= 0") {
			t.Fatalf("fio:\n%s", out)
		}
	}
	fio("randwrite")
	fio("randread")
	close(stop)
	wg.Wait()
	st := waitIdle(t, e)
	got := counters(t, st, time.Since(start))
	const blocks = 4 * 1024 // 4 jobs of 4 MiB in 4 KiB blocks
	want := ExportStats{
		// fio's nbd engine connects twice per job: once to learn the
		// export's size while it sets up, once for the I/O.
		ConnectionsTotal: 2 * 2 * 4,
		Requests:         2 * blocks,
		BytesRead:        blocks * 4096,
		BytesWritten:     blocks * 4096,
		Commands: CommandsStats{
			Read:  CommandStats{Requests: blocks, Bytes: blocks * 4096},
			Write: CommandStats{Requests: blocks, Bytes: blocks * 4096},
		},
	}
	if got != want {
		t.Errorf("counters after fio:\n got %+v\nwant %+v", got, want)
	}
	if j, err := json.Marshal(st); err != nil || !strings.Contains(string(j), `"bytes_read":16777216`) {
		t.Errorf("JSON: %s %v", j, err)
	}
	s.closeAndCheck()
}

// watchStats takes snapshots until stop is closed and checks each is
// consistent in itself and none goes back.
func watchStats(t *testing.T, e *Export, stop chan struct{}) {
	var last ExportStats
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Millisecond):
		}
		st := e.Stats()
		if st.Requests < last.Requests || st.ConnectionsTotal < last.ConnectionsTotal ||
			st.BytesRead < last.BytesRead || st.BytesWritten < last.BytesWritten {
			t.Errorf("snapshot went back:\n%+v\nafter\n%+v", st, last)
			return
		}
		l := st.Latency
		if st.Errors > st.Requests || l.P50Micros > l.P90Micros || l.P90Micros > l.P99Micros || l.P99Micros > l.MaxMicros {
			t.Errorf("inconsistent snapshot: %+v", st)
			return
		}
		last = st
	}
}

// BenchmarkStatsRecord is the recording each request adds, from one
// goroutine and from all at once into one export. The two clock reads it
// times are no extra cost in the server: they are the reads conn.touch
// did already.
func BenchmarkStatsRecord(b *testing.B) {
	var e Export
	b.Run("serial", func(b *testing.B) {
		r := &request{typ: cmdRead, length: 4096}
		for range b.N {
			r.start = time.Since(clockBase)
			e.stats.record(r, time.Since(clockBase))
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			r := &request{typ: cmdRead, length: 4096}
			for pb.Next() {
				r.start = time.Since(clockBase)
				e.stats.record(r, time.Since(clockBase))
			}
		})
	})
}
