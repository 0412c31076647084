package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// CopyOptions tune Copy.
type CopyOptions struct {
	// DstZeroed says dst reads as zeros everywhere already (a new image),
	// so holes and runs of zeros in src are skipped rather than zeroed:
	// nothing is written there, and dst stays sparse.
	DstZeroed bool
	// ChunkSize is the size of each read, a multiple of 4 KiB; 4 MiB if
	// 0. Reads are aligned to it, so with a power of two up to the block
	// size of a dynamic dst, writes never straddle blocks needlessly.
	ChunkSize int
	// Buffers is how many chunks may be in flight between the reader and
	// the writer; 4 if 0.
	Buffers int
	// Progress, if set, is called from a single goroutine after each
	// piece of the disk is done, with the bytes of the disk done so far
	// (holes included) and the total.
	Progress func(done, total int64)
}

// CopyStats say what Copy did.
type CopyStats struct {
	// Read is how many bytes were read from src: its data, not its holes.
	Read int64
	// Written is how many bytes of data were written to dst.
	Written int64
	// Zeroed is how many bytes of dst were zeroed (or, with DstZeroed,
	// skipped as zeros) rather than written.
	Zeroed int64
}

const (
	defaultChunk   = 4 << 20
	defaultBuffers = 4
	// zeroGrain is the granularity at which runs of zeros are found in
	// data read: a file system block, what a host can leave as a hole.
	zeroGrain = 4096
	// extentWindow bounds each Extents call, so the list stays small
	// (at most extentWindow/512 extents).
	extentWindow = 256 << 20
)

// Copy copies the whole of src onto the first src.Size() bytes of dst,
// which must be at least that large, and flushes dst. Two goroutines
// overlap the work: one walks src's extent map, skipping holes without
// reading them, and reads the data in chunks; the other writes each
// chunk's non-zero runs and zeros (or, with DstZeroed, skips) the rest.
//
// src's holes read as zeros, except in a differencing image, whose holes
// are its parent's data: those are read like data (and fail with
// ErrNoParent if the image has no parent).
//
// Copy stops at the first error, or when ctx is done, returning that.
// What dst holds then is undefined: callers write into a file they can
// throw away (see Convert).
func Copy(ctx context.Context, dst, src Disk, opts CopyOptions) (CopyStats, error) {
	var st CopyStats
	size := src.Size()
	if dst.Size() < size {
		return st, fmt.Errorf("vhd: copy: destination (%d bytes) is smaller than the source (%d bytes)", dst.Size(), size)
	}
	chunk := opts.ChunkSize
	if chunk == 0 {
		chunk = defaultChunk
	}
	if chunk <= 0 || chunk%zeroGrain != 0 {
		return st, fmt.Errorf("vhd: copy: chunk size %d is not a positive multiple of %d", chunk, zeroGrain)
	}
	nbuf := opts.Buffers
	if nbuf <= 0 {
		nbuf = defaultBuffers
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- make([]byte, chunk)
	}
	work := make(chan piece, nbuf)
	readErr := make(chan error, 1)
	go func() {
		defer close(work)
		r := reader{src: src, chunk: int64(chunk), free: free, work: work, holesAreZero: holesAreZero(src)}
		readErr <- r.run(ctx, size)
	}()

	w := writer{dst: dst, zeroed: opts.DstZeroed, st: &st}
	w.wb, _ = dst.(WritebackStarter)
	var done int64
	var werr error
	for p := range work {
		if werr == nil {
			werr = ctx.Err()
		}
		if werr == nil {
			werr = w.write(p)
		}
		if p.buf != nil {
			free <- p.buf[:cap(p.buf)]
		}
		if werr != nil {
			cancel() // stops the reader; keep draining so it can exit
			continue
		}
		done += p.n
		if opts.Progress != nil {
			opts.Progress(done, size)
		}
	}
	rerr := <-readErr
	switch {
	case werr != nil:
		return st, werr
	case rerr != nil:
		return st, rerr
	}
	// Past the source's end a larger dst (an aligned size) must read as
	// zeros too.
	if tail := dst.Size() - size; tail > 0 && !opts.DstZeroed {
		if err := dst.Zero(size, tail, ZeroMayDeallocate); err != nil {
			return st, err
		}
	}
	if err := ctx.Err(); err != nil {
		return st, err
	}
	return st, dst.Flush()
}

// holesAreZero reports whether src's holes read as zeros: everywhere but
// in a differencing layer, whose holes show its parent.
func holesAreZero(src Disk) bool {
	ps, ok := src.(ParentShower)
	return !ok || !ps.ShowsParent()
}

// piece is a run of the disk handed from reader to writer: data read
// into buf, or (buf nil) n bytes of zeros.
type piece struct {
	off int64
	n   int64
	buf []byte
}

type reader struct {
	src          Disk
	chunk        int64
	free         chan []byte
	work         chan<- piece
	holesAreZero bool
}

func (r *reader) run(ctx context.Context, size int64) error {
	for w := int64(0); w < size; w += extentWindow {
		exts, err := r.src.Extents(w, min(extentWindow, size-w))
		if err != nil {
			return err
		}
		for _, e := range exts {
			if e.State != ExtentData && (r.holesAreZero || e.State == ExtentZero) {
				if err := r.send(ctx, piece{off: e.Off, n: e.Len}); err != nil {
					return err
				}
				continue
			}
			if err := r.readRange(ctx, e.Off, e.Len); err != nil {
				return err
			}
		}
	}
	return nil
}

// readRange reads [off, off+n) in chunks aligned to the chunk size.
func (r *reader) readRange(ctx context.Context, off, n int64) error {
	for end := off + n; off < end; {
		l := min(end, (off/r.chunk+1)*r.chunk) - off
		var buf []byte
		select {
		case buf = <-r.free:
		case <-ctx.Done():
			return ctx.Err()
		}
		buf = buf[:l]
		if _, err := r.src.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			r.free <- buf
			return err
		}
		if err := r.send(ctx, piece{off: off, n: l, buf: buf}); err != nil {
			return err
		}
		off += l
	}
	return nil
}

func (r *reader) send(ctx context.Context, p piece) error {
	select {
	case r.work <- p:
		return nil
	case <-ctx.Done():
		if p.buf != nil {
			r.free <- p.buf
		}
		return ctx.Err()
	}
}

type writer struct {
	dst    Disk
	zeroed bool
	st     *CopyStats
	// wb, if dst has it, starts writing dst's dirty pages to disk every
	// writebackEvery bytes, so the disk works while the copy runs and
	// the final flush has little left to wait for.
	wb      WritebackStarter
	pending int64
}

// writebackEvery is how much data Copy writes between calls to
// StartWriteback.
const writebackEvery = 32 << 20

func (w *writer) write(p piece) error {
	if p.buf == nil {
		return w.zero(p.off, p.n)
	}
	w.st.Read += p.n
	// Split the chunk into runs of data and runs of zeros, each made of
	// whole zeroGrain units (aligned to the disk, so holes left in dst
	// are whole host blocks); write the data runs.
	buf := p.buf
	for i := 0; i < len(buf); {
		zero := isZero(buf[i:min(len(buf), grainEnd(p.off, i))])
		j := grainEnd(p.off, i)
		for j < len(buf) && isZero(buf[j:min(len(buf), grainEnd(p.off, j))]) == zero {
			j = grainEnd(p.off, j)
		}
		j = min(j, len(buf))
		off := p.off + int64(i)
		if zero {
			if err := w.zero(off, int64(j-i)); err != nil {
				return err
			}
		} else {
			if _, err := w.dst.WriteAt(buf[i:j], off); err != nil {
				return err
			}
			w.st.Written += int64(j - i)
			if w.pending += int64(j - i); w.wb != nil && w.pending >= writebackEvery {
				w.pending = 0
				w.wb.StartWriteback() // a hint: Flush reports real failures
			}
		}
		i = j
	}
	return nil
}

// grainEnd is the index in a buffer read at disk offset base where the
// zeroGrain unit holding index i ends.
func grainEnd(base int64, i int) int {
	pos := base + int64(i)
	return i + int(zeroGrain-pos%zeroGrain)
}

func (w *writer) zero(off, n int64) error {
	w.st.Zeroed += n
	if w.zeroed {
		return nil
	}
	return w.dst.Zero(off, n, ZeroMayDeallocate)
}
