package chains

import (
	"cmp"
	"slices"
	"sync"
	"unsafe"

	"vhdkit/engine"
)

// A chain read must not cost more as the chain grows. The resolver
// remembers, per 2 MiB chunk of the disk, which layer holds each sector
// (as runs), found once by asking each layer's extents top-down. After
// that a read costs one map lookup and one read from the owning layer's
// file, whatever the depth.
//
// Between live changes only the top layer changes. A write to it makes
// the top own the sectors written (the entry is patched); a zero or trim
// may hand sectors back to an ancestor, so it drops the entry. Runs name
// layers by id, not position (live.go): a live snapshot adds a layer
// with no data above the others and leaves every entry true; a live
// merge maps the merged layer's id to the layer that now holds its data. Each shard
// has a generation bumped on every change: a lookup that built an entry
// while a change ran does not install it, so no stale entry survives.
//
// Memory: the cache is bounded in bytes (Options.ReadCacheBytes,
// DefaultReadCacheBytes), not entries. An entry costs its runs (12 bytes
// each) and a fixed overhead; a chunk whose layers alternate sector by
// sector is 4096 runs, 48 KiB, where a chunk held by one layer is one
// run. Each shard keeps its share of the bound (at least the largest
// entry, so the bound is at least 64 x 48 KiB = 3 MiB) and drops
// arbitrary entries to make room.
const (
	chunkShift = 21
	chunkSize  = 1 << chunkShift
	shardCount = 64

	// DefaultReadCacheBytes bounds a chain's read cache unless
	// Options.ReadCacheBytes says otherwise: room for 2.7 GiB of the
	// worst layout (every other sector in another layer), over a TiB of
	// chunks held by one or a few layers.
	DefaultReadCacheBytes = 64 << 20

	// entryOverhead is what a cached chunk costs besides its runs: its
	// map slot (key, slice header, control byte, load factor) and the
	// rounding of its runs' allocation. Measured against the heap by
	// TestReadCacheBound and BenchmarkChainCacheHeap.
	entryOverhead = 96
)

// owner says where a run of sectors is read from.
type owner struct {
	layer int32 // the layer's id (Layer.id, Chain.byID); -1: no layer holds it (zeros)
	state engine.ExtentState
}

// run is a run of sectors of a chunk: [prev end, end) in bytes from the
// chunk's start. 12 bytes: a chunk's offsets fit in 32 bits.
type run struct {
	end int32
	owner
}

const (
	// runBytes is the size of a run in memory.
	runBytes = int64(unsafe.Sizeof(run{}))
	// maxEntryBytes is the largest entry: a run per sector.
	maxEntryBytes = chunkSize/engine.SectorSize*runBytes + entryOverhead
)

type shard struct {
	mu    sync.Mutex
	m     map[int64][]run // immutable slices: replaced, never changed
	bytes int64           // what m holds, by entryBytes
	gen   uint64
}

type resolver struct {
	c      *Chain
	shards [shardCount]shard
	// share is each shard's part of the byte bound.
	share int64
}

func newResolver(c *Chain, bound int64) *resolver {
	if bound <= 0 {
		bound = DefaultReadCacheBytes
	}
	r := &resolver{c: c, share: max(bound/shardCount, maxEntryBytes)}
	for i := range r.shards {
		r.shards[i].m = make(map[int64][]run)
	}
	return r
}

func (r *resolver) shard(chunk int64) *shard { return &r.shards[chunk%shardCount] }

// entryBytes is what an entry holding rs costs.
func entryBytes(rs []run) int64 { return int64(cap(rs))*runBytes + entryOverhead }

// cachedBytes is what the cache holds, by its own accounting.
func (r *resolver) cachedBytes() int64 {
	var n int64
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += sh.bytes
		sh.mu.Unlock()
	}
	return n
}

// runs returns the owner runs of a chunk, building them if needed.
func (r *resolver) runs(chunk int64) ([]run, error) {
	sh := r.shard(chunk)
	sh.mu.Lock()
	rs, gen := sh.m[chunk], sh.gen
	sh.mu.Unlock()
	if rs != nil {
		return rs, nil
	}
	rs, err := r.build(chunk)
	if err != nil {
		return nil, err
	}
	sh.mu.Lock()
	if sh.gen == gen {
		r.install(sh, chunk, rs)
	}
	sh.mu.Unlock()
	return rs, nil
}

// install puts rs in the shard as chunk's entry (replacing any), making
// room by dropping arbitrary entries. Called with sh.mu held.
func (r *resolver) install(sh *shard, chunk int64, rs []run) {
	if old, ok := sh.m[chunk]; ok {
		delete(sh.m, chunk)
		sh.bytes -= entryBytes(old)
	}
	need := entryBytes(rs)
	for k, v := range sh.m {
		if sh.bytes+need <= r.share {
			break
		}
		delete(sh.m, k)
		sh.bytes -= entryBytes(v)
	}
	sh.m[chunk] = rs
	sh.bytes += need
}

// pending is a byte range of the disk still looking for an owner.
type pending struct{ off, n int64 }

// build asks the layers, top down, which holds each sector of the chunk.
func (r *resolver) build(chunk int64) ([]run, error) {
	start := chunk << chunkShift
	n := min(chunkSize, r.c.size-start)
	type seg struct {
		off, n int64
		owner
	}
	var segs []seg
	layers := r.c.layers
	rest, err := walkLayers(layers, start, n, func(i int, e engine.Extent) {
		segs = append(segs, seg{e.Off, e.Len, owner{layers[i].id, e.State}})
	})
	if err != nil {
		return nil, err
	}
	for _, p := range rest {
		segs = append(segs, seg{p.off, p.n, owner{-1, engine.ExtentHole}})
	}
	slices.SortFunc(segs, func(a, b seg) int { return cmp.Compare(a.off, b.off) })
	rs := make([]run, 0, len(segs))
	for _, s := range segs {
		rs = appendRun(rs, run{int32(s.off + s.n - start), s.owner})
	}
	return slices.Clip(rs), nil
}

// walkLayers asks the layers, top down, what each holds of [off, off+n):
// found gets every extent a layer holds (data or zeros) with the layer's
// index, and what no layer holds is returned. A layer smaller than the
// one above it ends the search past its end: there it shows zeros, and
// what lies below it does not show through (as blktap reads such
// chains).
func walkLayers(layers []Layer, off, n int64, found func(i int, e engine.Extent)) ([]pending, error) {
	todo := []pending{{off, n}}
	var beyond []pending // past the end of a layer: zeros
	for i, l := range layers {
		if len(todo) == 0 {
			break
		}
		var next []pending
		size := l.Image.Size()
		for _, p := range todo {
			if p.off+p.n > size {
				cut := max(p.off, size)
				beyond = append(beyond, pending{cut, p.off + p.n - cut})
				if p.n = cut - p.off; p.n == 0 {
					continue
				}
			}
			ext, err := l.Image.Extents(p.off, p.n)
			if err != nil {
				return nil, err
			}
			for _, e := range ext {
				if e.State == engine.ExtentHole {
					next = append(next, pending{e.Off, e.Len})
				} else {
					found(i, e)
				}
			}
		}
		todo = next
	}
	return append(todo, beyond...), nil
}

func appendRun(rs []run, r run) []run {
	if n := len(rs); n > 0 && rs[n-1].owner == r.owner {
		rs[n-1].end = r.end
		return rs
	}
	return append(rs, r)
}

// forRuns calls fn for each piece of [off, off+n) with its owner.
func (r *resolver) forRuns(off, n int64, fn func(off, n int64, o owner) error) error {
	for n > 0 {
		chunk := off >> chunkShift
		rs, err := r.runs(chunk)
		if err != nil {
			return err
		}
		base := chunk << chunkShift
		in := off - base
		i, _ := slices.BinarySearchFunc(rs, in, func(x run, t int64) int {
			if int64(x.end) <= t {
				return -1
			}
			return 1
		})
		for ; i < len(rs) && n > 0; i++ {
			l := min(int64(rs[i].end)-in, n)
			if err := fn(base+in, l, rs[i].owner); err != nil {
				return err
			}
			in += l
			off += l
			n -= l
		}
		if in < chunkSize && n > 0 && i >= len(rs) {
			return engine.ErrOutOfRange
		}
	}
	return nil
}

// wroteTop records that the top layer now holds the whole sectors under
// [off, off+n).
func (r *resolver) wroteTop(off, n int64) {
	top := r.c.layers[0].id
	from := off / engine.SectorSize * engine.SectorSize
	to := (off + n + engine.SectorSize - 1) / engine.SectorSize * engine.SectorSize
	for c := from >> chunkShift; c<<chunkShift < to; c++ {
		base := c << chunkShift
		lo, hi := max(from, base)-base, min(to, base+chunkSize)-base
		sh := r.shard(c)
		sh.mu.Lock()
		sh.gen++
		if rs := sh.m[c]; rs != nil {
			r.install(sh, c, overlay(rs, int32(lo), int32(hi), owner{top, engine.ExtentData}))
		}
		sh.mu.Unlock()
	}
}

// overlay returns runs with [lo, hi) owned by o.
func overlay(rs []run, lo, hi int32, o owner) []run {
	out := make([]run, 0, len(rs)+2)
	prev := int32(0)
	for _, x := range rs {
		if x.end <= lo || prev >= hi {
			out = appendRun(out, x)
		} else {
			if prev < lo {
				out = appendRun(out, run{lo, x.owner})
			}
			out = appendRun(out, run{min(hi, x.end), o})
			if x.end > hi {
				out = appendRun(out, run{x.end, x.owner})
			}
		}
		prev = x.end
	}
	return slices.Clip(out)
}

// invalidate drops what is known of [off, off+n): the top may have handed it
// back to an ancestor.
func (r *resolver) invalidate(off, n int64) {
	for c := off >> chunkShift; c<<chunkShift < off+n; c++ {
		sh := r.shard(c)
		sh.mu.Lock()
		sh.gen++
		if rs, ok := sh.m[c]; ok {
			delete(sh.m, c)
			sh.bytes -= entryBytes(rs)
		}
		sh.mu.Unlock()
	}
}
