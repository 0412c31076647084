package chains

import (
	"cmp"
	"slices"
	"sync"

	"vhdkit/engine"
)

// A chain read must not cost more as the chain grows. The resolver
// remembers, per 2 MiB chunk of the disk, which layer holds each sector
// (as runs), found once by asking each layer's extents top-down. After
// that a read costs one map lookup and one read from the owning layer's
// file, whatever the depth.
//
// Only the top layer changes while a chain is open. A write to it makes
// the top own the sectors written (the entry is patched); a zero or trim
// may hand sectors back to an ancestor, so it drops the entry. Each shard
// has a generation bumped on every change: a lookup that built an entry
// while a change ran does not install it, so no stale entry survives.
const (
	chunkShift  = 21
	chunkSize   = 1 << chunkShift
	shardCount  = 64
	shardMaxEnt = 1024 // entries per shard: 64 shards cover 128 GiB
)

// owner says where a run of sectors is read from.
type owner struct {
	layer int // index into the chain; -1: no layer holds it (zeros)
	state engine.ExtentState
}

// run is a run of sectors of a chunk: [prev end, end) in bytes from the
// chunk's start.
type run struct {
	end int64
	owner
}

type shard struct {
	mu  sync.Mutex
	m   map[int64][]run // immutable slices: replaced, never changed
	gen uint64
}

type resolver struct {
	c      *Chain
	shards [shardCount]shard
}

func newResolver(c *Chain) *resolver {
	r := &resolver{c: c}
	for i := range r.shards {
		r.shards[i].m = make(map[int64][]run)
	}
	return r
}

func (r *resolver) shard(chunk int64) *shard { return &r.shards[chunk%shardCount] }

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
		if len(sh.m) >= shardMaxEnt {
			for k := range sh.m { // drop an arbitrary entry
				delete(sh.m, k)
				break
			}
		}
		sh.m[chunk] = rs
	}
	sh.mu.Unlock()
	return rs, nil
}

// pending is a byte range of the disk still looking for an owner.
type pending struct{ off, n int64 }

// build asks the layers, top down, which holds each sector of the chunk.
func (r *resolver) build(chunk int64) ([]run, error) {
	start := chunk << chunkShift
	n := min(chunkSize, r.c.Size()-start)
	type seg struct {
		off, n int64
		owner
	}
	var segs []seg
	rest, err := walkLayers(r.c.layers, start, n, func(i int, e engine.Extent) {
		segs = append(segs, seg{e.Off, e.Len, owner{i, e.State}})
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
		rs = appendRun(rs, run{s.off + s.n - start, s.owner})
	}
	return rs, nil
}

// walkLayers asks the layers, top down, what each holds of [off, off+n):
// found gets every extent a layer holds (data or zeros) with the layer's
// index, and what no layer holds is returned.
func walkLayers(layers []Layer, off, n int64, found func(i int, e engine.Extent)) ([]pending, error) {
	todo := []pending{{off, n}}
	for i, l := range layers {
		if len(todo) == 0 {
			break
		}
		var next []pending
		for _, p := range todo {
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
	return todo, nil
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
			if x.end <= t {
				return -1
			}
			return 1
		})
		for ; i < len(rs) && n > 0; i++ {
			l := min(rs[i].end-in, n)
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
	from := off / engine.SectorSize * engine.SectorSize
	to := (off + n + engine.SectorSize - 1) / engine.SectorSize * engine.SectorSize
	for c := from >> chunkShift; c<<chunkShift < to; c++ {
		base := c << chunkShift
		lo, hi := max(from, base)-base, min(to, base+chunkSize)-base
		sh := r.shard(c)
		sh.mu.Lock()
		sh.gen++
		if rs := sh.m[c]; rs != nil {
			sh.m[c] = overlay(rs, lo, hi, owner{0, engine.ExtentData})
		}
		sh.mu.Unlock()
	}
}

// overlay returns runs with [lo, hi) owned by o.
func overlay(rs []run, lo, hi int64, o owner) []run {
	out := make([]run, 0, len(rs)+2)
	prev := int64(0)
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
	return out
}

// forget drops what is known of [off, off+n): the top may have handed it
// back to an ancestor.
func (r *resolver) forget(off, n int64) {
	for c := off >> chunkShift; c<<chunkShift < off+n; c++ {
		sh := r.shard(c)
		sh.mu.Lock()
		sh.gen++
		delete(sh.m, c)
		sh.mu.Unlock()
	}
}
