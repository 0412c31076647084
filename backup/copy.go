package backup

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"sync"
	"sync/atomic"
	"time"

	"vhdkit/engine"
	"vhdkit/nbdclient"
)

// The copy of a plan's pieces into the destination, and its check.
//
// Workers (several per connection, so each connection keeps requests in
// flight) read a piece, checksum it (CRC-32C) and write it: its data
// runs with WriteAt, its runs of zeros not at all in a full backup (the
// new dynamic image reads zeros there) and with Zero in an incremental
// (which hides the base's data where it has some; the chain elides the
// rest). Pieces done are logged in checkpoints: the destination is
// flushed, then their lines are appended to the state log and synced. So
// the log never names a piece that is not durable, and a rerun skips
// exactly the pieces it names.
//
// Verification reads every piece of the plan back from the destination,
// once it is flushed, and compares its checksum with the one logged when
// it arrived: what the backup reads is what the server sent, whatever
// went wrong in between (a write lost, elided wrongly, or torn by a
// crash a resume did not notice). It costs a read of the copied bytes
// from the local file, instead of a second read over the network.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkpointBytes and checkpointEvery: how much is copied between
// checkpoints (what a crash can make a rerun copy again). Variables for
// the power-loss test, which wants many checkpoints.
var (
	checkpointBytes int64 = 64 << 20
	checkpointEvery       = 2 * time.Second
)

const (
	// zeroRun is the granularity at which runs of zeros are found.
	zeroRun = 4096
	// workersPerConn keeps this many READs in flight per connection.
	workersPerConn = 8
	// storeSlots bounds the pieces written into the destination at
	// once. Every write goes to one file, and 32 writers of 2 MiB pieces
	// only queue on its locks (the kernel's, the image's block
	// allocation) and slow each other down: a 1 GiB pull took 4.4-5.6 s
	// with 32, 3.8-4.7 s with 4 (docs/BENCHMARKS.md). Reads stay 8 per
	// connection in flight meanwhile.
	storeSlots = 4
)

// copier copies pieces from the connections into dest.
type copier struct {
	conns       []*nbdclient.Conn
	dest        engine.Disk
	log         *stateLog
	incremental bool
	progress    func(done, total int64)

	done    atomic.Int64 // bytes of the plan copied, resumed ones included
	total   int64
	resumed int64 // bytes the log held before this run
	stats   copyStats

	// stores holds a slot per piece being written (storeSlots).
	stores chan struct{}

	// ckmu lets one checkpoint run at a time; mu guards pending, the
	// pieces written but not yet logged, and their bytes.
	ckmu         sync.Mutex
	mu           sync.Mutex
	pending      []record
	pendingBytes int64
	lastCheck    time.Time
}

// copyStats count what the copy did (atomically).
type copyStats struct {
	read    atomic.Int64 // bytes read from the server
	written atomic.Int64 // bytes written as data
	zeroed  atomic.Int64 // bytes written as zeros (incremental)
	skipped atomic.Int64 // bytes of zeros not written (full)
}

// run copies the pieces of plan the log does not hold yet. On an error
// (or ctx's end) the pieces done so far are still logged, so a rerun
// resumes after them.
func (c *copier) run(ctx context.Context, plan []piece) error {
	c.total = total(plan)
	var todo []piece
	for _, p := range plan {
		if _, ok := c.log.done[p]; !ok {
			todo = append(todo, p)
		}
	}
	c.resumed = c.total - total(todo)
	c.done.Store(c.resumed)
	c.report()
	c.lastCheck = time.Now()
	c.stores = make(chan struct{}, storeSlots)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan piece)
	var wg sync.WaitGroup
	for i := range len(c.conns) * workersPerConn {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.worker(ctx, cancel, c.conns[i%len(c.conns)], work)
		}()
	}
feed:
	for _, p := range todo {
		select {
		case work <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	err := context.Cause(ctx)
	if cerr := c.checkpoint(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (c *copier) worker(ctx context.Context, fail context.CancelCauseFunc, conn *nbdclient.Conn, work <-chan piece) {
	buf := make([]byte, maxPiece)
	for p := range work {
		if ctx.Err() != nil {
			continue
		}
		if err := c.copyPiece(ctx, conn, p, buf[:p.n]); err != nil {
			fail(err)
		}
	}
}

// copyPiece reads, stores and records one piece.
func (c *copier) copyPiece(ctx context.Context, conn *nbdclient.Conn, p piece, b []byte) error {
	if err := conn.ReadAt(ctx, b, p.off); err != nil {
		return fmt.Errorf("reading %d bytes at %d from the server: %w", p.n, p.off, err)
	}
	c.stats.read.Add(p.n)
	crc := crc32.Checksum(b, castagnoli)
	c.stores <- struct{}{}
	err := c.store(p, b)
	<-c.stores
	if err != nil {
		return fmt.Errorf("writing %d bytes at %d: %w", p.n, p.off, err)
	}
	c.done.Add(p.n)
	c.report()
	return c.completed(record{p, crc})
}

// store writes a piece's data runs, and its zero runs where they must
// be written.
func (c *copier) store(p piece, b []byte) error {
	for _, r := range zeroRuns(b, p.off) {
		seg := b[r.off-p.off : r.off-p.off+r.n]
		switch {
		case !r.zero:
			if _, err := c.dest.WriteAt(seg, r.off); err != nil {
				return err
			}
			c.stats.written.Add(r.n)
		case c.incremental:
			if err := c.dest.Zero(r.off, r.n, engine.ZeroMayDeallocate); err != nil {
				return err
			}
			c.stats.zeroed.Add(r.n)
		default:
			c.stats.skipped.Add(r.n)
		}
	}
	return nil
}

// run is a part of a piece that is all zeros, or not.
type run struct {
	off, n int64
	zero   bool
}

var zeros = make([]byte, zeroRun)

// zeroRuns splits b (which starts at off on the disk) into runs of zeros
// and of data, cut at zeroRun-aligned disk offsets.
func zeroRuns(b []byte, off int64) []run {
	var out []run
	for i := int64(0); i < int64(len(b)); {
		end := min(int64(len(b)), (off+i)/zeroRun*zeroRun+zeroRun-off)
		z := bytes.Equal(b[i:end], zeros[:end-i])
		if k := len(out); k > 0 && out[k-1].zero == z {
			out[k-1].n += end - i
		} else {
			out = append(out, run{off + i, end - i, z})
		}
		i = end
	}
	return out
}

// completed queues a stored piece for the next checkpoint, and runs one
// when enough is queued or enough time has passed. The worker that finds
// it due takes the batch at once, under mu: the others then see an empty
// queue, where they used to all find it due, wait for the first
// checkpoint and each run another (a convoy of flushes of a few pieces).
func (c *copier) completed(r record) error {
	c.mu.Lock()
	c.pending = append(c.pending, r)
	c.pendingBytes += r.n
	if c.pendingBytes < checkpointBytes && time.Since(c.lastCheck) < checkpointEvery {
		c.mu.Unlock()
		return nil
	}
	batch := c.takePending()
	c.mu.Unlock()
	return c.logDurably(batch)
}

// takePending empties the queue and returns what it held; mu is held.
func (c *copier) takePending() []record {
	batch := c.pending
	c.pending, c.pendingBytes, c.lastCheck = nil, 0, time.Now()
	return batch
}

// checkpoint logs every piece queued (at the end of a run).
func (c *copier) checkpoint() error {
	c.mu.Lock()
	batch := c.takePending()
	c.mu.Unlock()
	return c.logDurably(batch)
}

// logDurably makes a batch of pieces durable, then logs them. Order: each
// was written (its WriteAt or Zero returned) before it was queued, and
// Flush makes durable every write that returned before it; only then
// does the log name them. A crash between the two leaves durable pieces
// unlogged, which a rerun copies again: the same bytes. Batches are
// logged one at a time (ckmu), in any order: the log is a set.
func (c *copier) logDurably(batch []record) error {
	if len(batch) == 0 {
		return nil
	}
	c.ckmu.Lock()
	defer c.ckmu.Unlock()
	if err := c.dest.Flush(); err != nil {
		return fmt.Errorf("flushing the backup: %w", err)
	}
	if err := c.log.append(batch); err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	return nil
}

func (c *copier) report() {
	if c.progress != nil {
		c.progress(c.done.Load(), c.total)
	}
}

// verify reads every piece of plan back from dest and compares its
// checksum with the one logged when it was copied.
func verify(ctx context.Context, dest engine.Disk, log *stateLog, plan []piece) error {
	work := make(chan piece)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, maxPiece)
			for p := range work {
				if err := verifyPiece(dest, log, p, buf[:p.n]); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		}()
	}
	var err error
	for _, p := range plan {
		if len(errc) > 0 || ctx.Err() != nil {
			break
		}
		work <- p
	}
	close(work)
	wg.Wait()
	select {
	case err = <-errc:
	default:
		err = ctx.Err()
	}
	return err
}

func verifyPiece(dest engine.Disk, log *stateLog, p piece, b []byte) error {
	want, ok := log.done[p]
	if !ok {
		return fmt.Errorf("verification: the piece at %d (%d bytes) was never copied", p.off, p.n)
	}
	if _, err := dest.ReadAt(b, p.off); err != nil {
		return fmt.Errorf("verification: reading %d bytes at %d back: %w", p.n, p.off, err)
	}
	if got := crc32.Checksum(b, castagnoli); got != want {
		return fmt.Errorf("verification: the %d bytes at %d read back differ from what the server sent (CRC-32C %08x, want %08x)", p.n, p.off, got, want)
	}
	return nil
}
