package chains

import (
	"bytes"
	"cmp"
	"io"
	"slices"

	"vhdkit/engine"
)

// Size implements engine.Disk. A live change keeps the size.
func (c *Chain) Size() int64 { return c.size }

// ReadOnly implements engine.Disk.
func (c *Chain) ReadOnly() bool { return c.readOnly }

// ReadAt implements engine.Disk: each sector comes from the topmost layer
// holding it, found through the resolver.
func (c *Chain) ReadAt(p []byte, off int64) (int, error) {
	c.gate.RLock()
	defer c.gate.RUnlock()
	if len(c.layers) == 1 {
		return c.layers[0].Image.ReadAt(p, off) // nothing to resolve
	}
	size := c.size
	if off < 0 {
		return 0, engine.ErrOutOfRange
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > size-off {
		p, eof = p[:size-off], io.EOF
	}
	start := off
	err := c.res.forRuns(off, int64(len(p)), func(o, n int64, w owner) error {
		buf := p[o-start : o-start+n]
		if w.layer < 0 || w.state == engine.ExtentZero {
			clear(buf)
			return nil
		}
		return c.byID[w.layer].ReadStored(buf, o)
	})
	if err != nil {
		return 0, err
	}
	return len(p), eof
}

// WriteAt implements engine.Disk: writes go to the top layer.
func (c *Chain) WriteAt(p []byte, off int64) (int, error) {
	c.gate.RLock()
	defer c.gate.RUnlock()
	if d := c.dirty.Load(); d != nil {
		c.copyMu.RLock()
		defer c.copyMu.RUnlock()
		defer d.mark(off, int64(len(p))) // after the write lands: see live_merge_top.go
	}
	n, err := c.layers[0].Image.WriteAt(p, off)
	switch {
	case len(c.layers) == 1:
	case err != nil:
		// Some of the range may have reached the top before the error
		// (a write spanning blocks can fail in the second): who owns
		// each sector is found again on the next read.
		c.res.invalidate(off, int64(len(p)))
	case isZero(p):
		c.res.invalidate(off, int64(n)) // may have been elided
	default:
		c.res.wroteTop(off, int64(n))
	}
	return n, err
}

// Zero implements engine.Disk. While a live merge copies the top, zeros
// keep the range allocated in it, so that no sector the merge may have
// copied already shows the target again (live_merge.go).
func (c *Chain) Zero(off, n int64, mode engine.ZeroMode) error {
	c.gate.RLock()
	defer c.gate.RUnlock()
	defer c.res.invalidate(off, n)
	d := c.dirty.Load()
	if d == nil {
		return c.layers[0].Image.Zero(off, n, mode)
	}
	c.copyMu.RLock()
	defer c.copyMu.RUnlock()
	defer d.mark(off, n)
	return c.layers[0].Image.Zero(off, n, engine.ZeroKeepAllocated)
}

// Trim implements engine.Disk: a trimmed range of the top may show an
// ancestor's data again. While a live merge copies the top, a trim is a
// zero that keeps the range allocated (see Zero).
func (c *Chain) Trim(off, n int64) error {
	c.gate.RLock()
	defer c.gate.RUnlock()
	defer c.res.invalidate(off, n)
	d := c.dirty.Load()
	if d == nil {
		return c.layers[0].Image.Trim(off, n)
	}
	c.copyMu.RLock()
	defer c.copyMu.RUnlock()
	defer d.mark(off, n)
	return c.layers[0].Image.Zero(off, n, engine.ZeroKeepAllocated)
}

// Flush implements engine.Disk. Only the top is ever written.
func (c *Chain) Flush() error {
	c.gate.RLock()
	defer c.gate.RUnlock()
	return c.layers[0].Image.Flush()
}

// Extents implements engine.Disk for the whole chain: data where any
// layer holds data, holes where none holds anything. It walks the layers'
// extent maps top-down (as below does) instead of the resolver: the
// resolver works per 2 MiB chunk, which made a map of a large range cost
// a cache entry per chunk (a second per TiB, evicting the entries reads
// use) where the layers answer in milliseconds.
func (c *Chain) Extents(off, n int64) ([]engine.Extent, error) {
	if off < 0 || n < 0 || off > c.size || n > c.size-off {
		return nil, engine.ErrOutOfRange
	}
	c.gate.RLock()
	defer c.gate.RUnlock()
	return below{c.layers}.Extents(off, n)
}

func appendExtent(list []engine.Extent, e engine.Extent) []engine.Extent {
	if k := len(list); k > 0 && list[k-1].State == e.State && list[k-1].Off+list[k-1].Len == e.Off {
		list[k-1].Len += e.Len
		return list
	}
	return append(list, e)
}

// below is a chain seen from one of its layers down (layers, that layer
// first): what a differencing layer reads where it holds nothing. It is
// read-only. It holds a slice of the chain's layers as they were when it
// was made; a live change that alters them makes a new one (wireParents).
type below struct {
	layers []Layer
}

func (b below) Size() int64    { return b.layers[0].Image.Size() }
func (b below) ReadOnly() bool { return true }
func (b below) Flush() error   { return nil }
func (b below) Close() error   { return nil }

func (b below) ReadAt(p []byte, off int64) (int, error) {
	return b.layers[0].Image.ReadAt(p, off)
}

func (b below) WriteAt([]byte, int64) (int, error)       { return 0, engine.ErrReadOnly }
func (b below) Zero(int64, int64, engine.ZeroMode) error { return engine.ErrReadOnly }
func (b below) Trim(int64, int64) error                  { return engine.ErrReadOnly }

// Extents merges the layers: data where any holds data.
func (b below) Extents(off, n int64) ([]engine.Extent, error) {
	var found []engine.Extent
	rest, err := walkLayers(b.layers, off, n, func(_ int, e engine.Extent) { found = append(found, e) })
	if err != nil {
		return nil, err
	}
	for _, p := range rest {
		found = append(found, engine.Extent{Off: p.off, Len: p.n, State: engine.ExtentHole})
	}
	return sortExtents(found), nil
}

func sortExtents(list []engine.Extent) []engine.Extent {
	slices.SortFunc(list, func(a, b engine.Extent) int { return cmp.Compare(a.Off, b.Off) })
	var out []engine.Extent
	for _, e := range list {
		out = appendExtent(out, e)
	}
	return out
}

var zeros = make([]byte, 64<<10)

func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeros))
		if !bytes.Equal(p[:n], zeros[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
