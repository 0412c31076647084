package nbdserve

import (
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"vhdkit/engine"
)

// zeroDisk is a large disk of zeros that holds no memory, so a test can
// measure the server's own.
type zeroDisk struct{ size int64 }

func (z zeroDisk) Size() int64 { return z.size }
func (z zeroDisk) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}
func (z zeroDisk) WriteAt(p []byte, off int64) (int, error)   { return len(p), nil }
func (z zeroDisk) Flush() error                               { return nil }
func (z zeroDisk) Zero(off, n int64, _ engine.ZeroMode) error { return nil }
func (z zeroDisk) Trim(off, n int64) error                    { return nil }
func (z zeroDisk) ReadOnly() bool                             { return false }
func (z zeroDisk) Close() error                               { return nil }
func (z zeroDisk) Extents(off, n int64) ([]engine.Extent, error) {
	return []engine.Extent{{Off: off, Len: n, State: engine.ExtentData}}, nil
}

// flood opens n connections that each send reads 32 MiB long and never
// read a reply.
func flood(t *testing.T, path string, conns, reads int) []*client {
	t.Helper()
	var cs []*client
	for range conns {
		c := dial(t, path)
		c.open("d", false)
		var b []byte
		for i := range reads {
			b = append(b, cat(be32(requestMagic), be16(0), be16(cmdRead), be64(uint64(i)), be64(uint64(i)<<25), be32(32<<20))...)
		}
		c.write(b)
		cs = append(cs, c)
	}
	return cs
}

// heapPeak samples the heap in use for d and returns the most seen.
func heapPeak(d time.Duration) uint64 {
	var peak uint64
	var ms runtime.MemStats
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
	}
	return peak
}

// TestStalledReadersStayInBudget: 8 connections each ask for 16 reads of
// 32 MiB and never read a reply. The server must hold their data within
// its memory budget (128 MiB by default), not per connection (it held
// 96 MiB for each: 768 MiB here, ~24 GiB at the connection limit).
func TestStalledReadersStayInBudget(t *testing.T) {
	path, _ := testServer(t, oneExport(zeroDisk{size: 1 << 30}))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	flood(t, path, 8, 16)
	peak := heapPeak(3 * time.Second)
	grew := int64(peak) - int64(base)
	t.Logf("heap in use: %d MiB before the flood, peak %d MiB (+%d MiB)", base>>20, peak>>20, grew>>20)
	if grew > 300<<20 {
		t.Errorf("8 stalled connections made the heap grow by %d MiB; the limit is 300 MiB", grew>>20)
	}
}

// replyWithin reads a 4 KiB read's reply on a fresh connection, failing
// if it takes longer than limit.
func replyWithin(t *testing.T, path string, limit time.Duration) time.Duration {
	t.Helper()
	c := dial(t, path)
	c.open("d", false)
	start := time.Now()
	c.request(0, cmdRead, 1, 0, 4096, nil)
	if r := c.simpleReply(4096); r.errno != 0 {
		t.Fatalf("read: errno %d", r.errno)
	}
	took := time.Since(start)
	if took > limit {
		t.Errorf("a client that reads its replies waited %v, more than %v", took, limit)
	}
	return took
}

// TestStalledReadersAreCutOff: clients that take no replies hold the
// whole budget only until the stall timeout; then they are disconnected
// and a client that reads its replies is served.
func TestStalledReadersAreCutOff(t *testing.T) {
	srv := oneExport(zeroDisk{size: 1 << 30})
	srv.StallTimeout = time.Second
	path, _ := testServer(t, srv)
	flood(t, path, 8, 16)
	time.Sleep(200 * time.Millisecond) // let them take the budget
	took := replyWithin(t, path, 10*time.Second)
	t.Logf("served after %v", took)
	// Then every stalled connection is cut off in turn: each gets the
	// budget, sends what fits in its socket and stalls.
	deadline := time.Now().Add(20 * time.Second)
	for live(srv) > 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := live(srv); n > 1 {
		t.Errorf("%d stalled connections still open", n-1)
	}
}

// live counts the server's connections.
func live(s *Server) int { return s.eachConn(func(*conn) {}) }

// TestStalledWriterIsCutOff: a WRITE whose data stops arriving holds its
// buffer only until the stall timeout.
func TestStalledWriterIsCutOff(t *testing.T) {
	srv := oneExport(zeroDisk{size: 1 << 30})
	srv.StallTimeout = time.Second
	srv.MemoryBudget = 1 << 20
	path, _ := testServer(t, srv)
	w := dial(t, path)
	w.open("d", false)
	w.request(0, cmdWrite, 1, 0, 1<<20, make([]byte, 100)) // 100 bytes of 1 MiB
	time.Sleep(200 * time.Millisecond)
	replyWithin(t, path, 10*time.Second)
	w.expectClosed()
}

// TestRequestLargerThanBudget: a read larger than the whole memory
// budget waits for all of it and is served, alongside others.
func TestRequestLargerThanBudget(t *testing.T) {
	srv := oneExport(zeroDisk{size: 1 << 30})
	srv.MemoryBudget = 1 << 20
	path, _ := testServer(t, srv)
	errs := make(chan error, 3)
	for range 3 {
		c := dial(t, path)
		c.open("d", false)
		for i := range 4 {
			c.request(0, cmdRead, uint64(i), 0, 8<<20, nil)
		}
		go func() { errs <- readReplies(c.br, 4, 8<<20) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("8 MiB reads with a 1 MiB budget: %v", err)
		}
	}
}

// readReplies reads n simple replies of size bytes each.
func readReplies(r io.Reader, n, size int) error {
	for range n {
		var h [simpleHdrSize]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return err
		}
		if e := binary.BigEndian.Uint32(h[4:]); e != 0 {
			return fmt.Errorf("errno %d", e)
		}
		if _, err := io.CopyN(io.Discard, r, int64(size)); err != nil {
			return err
		}
	}
	return nil
}

// TestShutdownClosesStalledClients: shutdown waits the grace period for
// a client that takes no replies, then closes it, flushes and returns.
func TestShutdownClosesStalledClients(t *testing.T) {
	d := &flushCounter{zeroDisk: zeroDisk{size: 1 << 30}}
	srv := oneExport(d)
	srv.ShutdownGrace = 500 * time.Millisecond
	path, stop := testServer(t, srv)
	flood(t, path, 2, 16)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	stop()
	if took := time.Since(start); took > srv.ShutdownGrace+3*time.Second {
		t.Errorf("shutdown took %v with a grace period of %v", took, srv.ShutdownGrace)
	}
	if d.flushes.Load() == 0 {
		t.Error("no flush at shutdown")
	}
}

type flushCounter struct {
	zeroDisk
	flushes atomic.Int64
}

func (f *flushCounter) Flush() error { f.flushes.Add(1); return nil }
