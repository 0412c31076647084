package chains

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
	"vhdkit/internal/blktap"
)

// The interop soak of issue 15: vhdkit and Xen's blktap take turns on one
// chain. Each seed runs a random mix of vhd-util create, snapshot,
// coalesce (with modify -p to re-link what was above), resize and fill,
// tapwrite writes, vhdkit writes, trims and zeroes (through the chains
// API: the server adds nothing to what reaches the image), and vhd merge,
// compact, resize, snapshot and set-parent. After every step vhd-util
// check and vhd check pass on every image, and vhdkit, vhd-util read and
// a model agree on every byte of every layer (read with its chain).

var (
	mixSeeds = flag.Int("blktap.seeds", 24, "seeds of TestBlktapMix")
	mixSteps = flag.Int("blktap.steps", 14, "steps per seed of TestBlktapMix")
)

// mixCap bounds how far resizes grow the disk (MiB): every step reads it
// whole, twice.
const mixCap = 28

type mixLayer struct {
	path  string
	model []byte // what the image reads, with its chain
}

type mixRun struct {
	t      *testing.T
	rng    *rand.Rand
	dir    string
	seed   uint64
	layers []mixLayer // base first
	files  int
	log    []string
}

func TestBlktapMix(t *testing.T) {
	blktap.Dir(t)
	seeds := *mixSeeds
	if testing.Short() {
		seeds = min(seeds, 4)
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			m := &mixRun{t: t, rng: rand.New(rand.NewPCG(seed, 15)), dir: t.TempDir(), seed: seed}
			m.start()
			for range *mixSteps {
				m.step()
				m.verify()
			}
		})
	}
}

func (m *mixRun) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("seed %d, after %s: %s", m.seed, strings.Join(m.log, "; "), fmt.Sprintf(format, args...))
}

func (m *mixRun) newPath() string {
	m.files++
	return filepath.Join(m.dir, fmt.Sprintf("i%02d.vhd", m.files))
}

func (m *mixRun) top() *mixLayer { return &m.layers[len(m.layers)-1] }

func (m *mixRun) note(format string, args ...any) {
	m.log = append(m.log, fmt.Sprintf(format, args...))
}

// start makes the base: by vhd-util or by vhdkit, 16 MiB.
func (m *mixRun) start() {
	p := m.newPath()
	if m.rng.IntN(2) == 0 {
		blktap.Util(m.t, "create", "-n", p, "-s", "16")
		m.note("vhd-util create")
	} else {
		img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeDynamic, Size: 16 << 20})
		if err != nil {
			m.t.Fatal(err)
		}
		img.Close()
		m.note("vhd create")
	}
	m.layers = []mixLayer{{p, make([]byte, 16<<20)}}
}

// step runs one operation, chosen among those the chain allows.
func (m *mixRun) step() {
	m.t.Helper()
	ops := []func() bool{m.tapWrite, m.tapWrite, m.vhdWrite, m.vhdWrite, m.vhdTrim, m.vhdZero,
		m.xenSnapshot, m.vhdSnapshot, m.xenCoalesce, m.xenResize, m.xenFill,
		m.vhdMerge, m.vhdCompact, m.vhdResize, m.vhdSetParent}
	for {
		if ops[m.rng.IntN(len(ops))]() {
			return
		}
	}
}

// span picks a range of the top: a few sectors, a block, or unaligned
// bytes across a block boundary.
func (m *mixRun) span() (off, n int64) {
	size := int64(len(m.top().model))
	switch m.rng.IntN(3) {
	case 0:
		off = m.rng.Int64N(size/512) * 512
		n = 512 * (1 + m.rng.Int64N(64))
	case 1:
		off = m.rng.Int64N(size>>21) << 21
		n = 2 << 20
	default:
		off = m.rng.Int64N(size)
		n = 1 + m.rng.Int64N(3<<20)
	}
	return off, min(n, size-off)
}

func (m *mixRun) data(n int64) []byte {
	p := make([]byte, n)
	fill := byte(1 + m.rng.IntN(255))
	for i := range p {
		p[i] = fill + byte(i>>9)
	}
	return p
}

func (m *mixRun) tapWrite() bool {
	off, n := m.span()
	p := m.data(n)
	blktap.Write(m.t, m.top().path, off, p)
	copy(m.top().model[off:], p)
	m.note("tapwrite %#x+%#x", off, n)
	return true
}

// withTop opens the top for writing through vhdkit.
func (m *mixRun) withTop(fn func(c *Chain) error) {
	m.t.Helper()
	c, err := Open(m.top().path, Options{})
	if err != nil {
		m.fatalf("open the top for writing: %v", err)
	}
	if err := fn(c); err != nil {
		c.Close()
		m.fatalf("%v", err)
	}
	if err := c.Close(); err != nil {
		m.fatalf("close: %v", err)
	}
}

func (m *mixRun) vhdWrite() bool {
	off, n := m.span()
	p := m.data(n)
	m.withTop(func(c *Chain) error { _, err := c.WriteAt(p, off); return err })
	copy(m.top().model[off:], p)
	m.note("vhd write %#x+%#x", off, n)
	return true
}

// below is what the layer under the top shows at off, for a trim.
func (m *mixRun) below(off, n int64) []byte {
	out := make([]byte, n)
	if len(m.layers) > 1 {
		under := m.layers[len(m.layers)-2].model
		if off < int64(len(under)) {
			copy(out, under[off:])
		}
	}
	return out
}

func (m *mixRun) vhdTrim() bool {
	off, n := m.span()
	m.withTop(func(c *Chain) error { return c.Trim(off, n) })
	// A trim shows the parent again (zeros where there is none); its
	// partial sectors at either end are zeroed.
	model := m.top().model
	in, end := (off+511)/512*512, (off+n)/512*512
	if in >= end {
		clear(model[off : off+n])
	} else {
		clear(model[off:in])
		clear(model[end : off+n])
		copy(model[in:end], m.below(in, end-in))
	}
	m.note("vhd trim %#x+%#x", off, n)
	return true
}

func (m *mixRun) vhdZero() bool {
	off, n := m.span()
	mode := engine.ZeroMode(m.rng.IntN(2))
	m.withTop(func(c *Chain) error { return c.Zero(off, n, mode) })
	clear(m.top().model[off : off+n])
	m.note("vhd zero %#x+%#x mode %d", off, n, mode)
	return true
}

func (m *mixRun) push(p string) {
	m.layers = append(m.layers, mixLayer{p, bytes.Clone(m.top().model)})
}

func (m *mixRun) xenSnapshot() bool {
	if len(m.layers) >= 5 {
		return false
	}
	p := m.newPath()
	blktap.Util(m.t, "snapshot", "-n", p, "-p", m.top().path)
	m.note("vhd-util snapshot")
	size := m.skipEmpty(p)
	m.push(p)
	m.top().model = resized(m.top().model, size)
	return true
}

// skipEmpty follows vhd-util snapshot past empty layers: it links the new
// image to the first ancestor that holds a block (vhd-util's
// find_snapshot_target), so the empty layers above that one leave the
// chain. They held nothing, so they are deleted. It returns the size
// vhd-util gave the snapshot.
func (m *mixRun) skipEmpty(snap string) int {
	m.t.Helper()
	parent := strings.TrimSpace(string(blktap.Util(m.t, "query", "-n", snap, "-p")))
	for m.top().path != parent {
		if len(m.layers) == 1 {
			m.fatalf("vhd-util snapshot linked %s to %s, which is not in the chain", snap, parent)
		}
		os.Remove(m.top().path)
		m.layers = m.layers[:len(m.layers)-1]
		m.note("(it skipped the empty top)")
	}
	var mib int
	if _, err := fmt.Sscan(string(blktap.Util(m.t, "query", "-n", snap, "-v")), &mib); err != nil {
		m.fatalf("vhd-util query -v %s: %v", snap, err)
	}
	return mib << 20
}

// resized is model cut or grown to size: past a parent's end a child
// reads zeros.
func resized(model []byte, size int) []byte {
	if size <= len(model) {
		return model[:size]
	}
	return append(model, make([]byte, size-len(model))...)
}

func (m *mixRun) vhdSnapshot() bool {
	if len(m.layers) >= 5 {
		return false
	}
	p := m.newPath()
	c, err := Snapshot(m.top().path, p, CreateOptions{})
	if err != nil {
		m.fatalf("vhd snapshot: %v", err)
	}
	c.Close()
	m.push(p)
	m.note("vhd snapshot")
	return true
}

// xenCoalesce coalesces a layer into its parent (vhd-util coalesce, which
// cannot write past the parent's end) and, as Xen does, re-links the layer
// above it onto the parent (vhd-util modify -p) and deletes it.
func (m *mixRun) xenCoalesce() bool {
	if len(m.layers) < 2 {
		return false
	}
	i := 1 + m.rng.IntN(len(m.layers)-1)
	child, parent := &m.layers[i], &m.layers[i-1]
	if len(child.model) > len(parent.model) {
		return false
	}
	blktap.Util(m.t, "coalesce", "-n", child.path)
	copy(parent.model, child.model)
	if i+1 < len(m.layers) {
		blktap.Util(m.t, "modify", "-n", m.layers[i+1].path, "-p", parent.path)
	}
	os.Remove(child.path)
	m.layers = append(m.layers[:i], m.layers[i+1:]...)
	m.note("vhd-util coalesce layer %d (+ modify -p)", i)
	return true
}

func isTap(t *testing.T, path string) bool {
	ft := footerOf(t, path)
	return ft.Creator() == "tap"
}

func (m *mixRun) xenResize() bool {
	top := m.top()
	size := len(top.model) >> 20
	if !isTap(m.t, top.path) || size+2 > mixCap {
		return false
	}
	ns := size + 2*(1+m.rng.IntN(2))
	if ns > mixCap {
		ns = size + 2
	}
	blktap.Util(m.t, "resize", "-n", top.path, "-s", fmt.Sprint(ns), "-j", filepath.Join(m.dir, "journal"))
	top.model = append(top.model, make([]byte, (ns-size)<<20)...)
	m.note("vhd-util resize to %d MiB", ns)
	return true
}

func (m *mixRun) xenFill() bool {
	if len(m.top().model)%(2<<20) != 0 {
		return false // fill reads whole blocks
	}
	blktap.Util(m.t, "fill", "-n", m.top().path)
	m.note("vhd-util fill")
	return true
}

func (m *mixRun) vhdMerge() bool {
	if len(m.layers) < 2 {
		return false
	}
	top, parent := m.top(), &m.layers[len(m.layers)-2]
	_, err := Merge(context.Background(), top.path, MergeOptions{})
	if err != nil && strings.Contains(err.Error(), "cannot be merged there") {
		m.note("vhd merge refused (the target's parent holds data past its end)")
		return true
	}
	if err != nil {
		m.fatalf("vhd merge: %v", err)
	}
	merged := bytes.Clone(top.model)
	if len(parent.model) > len(merged) {
		merged = append(merged, parent.model[len(merged):]...)
	}
	parent.model = merged
	m.layers = m.layers[:len(m.layers)-1]
	m.note("vhd merge")
	return true
}

func (m *mixRun) vhdCompact() bool {
	i := m.rng.IntN(len(m.layers))
	if _, err := Compact(context.Background(), m.layers[i].path, CompactOptions{}); err != nil {
		m.fatalf("vhd compact layer %d: %v", i, err)
	}
	m.note("vhd compact layer %d", i)
	return true
}

func (m *mixRun) vhdResize() bool {
	top := m.top()
	size := len(top.model) >> 20
	if len(m.layers) != 1 || size+2 > mixCap {
		return false
	}
	ns := size + 2
	if err := Resize(top.path, int64(ns)<<20, ResizeOptions{}); err != nil {
		m.fatalf("vhd resize: %v", err)
	}
	top.model = append(top.model, make([]byte, 2<<20)...)
	m.note("vhd resize to %d MiB", ns)
	return true
}

// vhdSetParent renames a parent and re-links its child with vhd
// set-parent. When the child has a child of its own that Xen's tools
// made (recording the file time the re-link changed), vhdkit refuses that
// one as its error says, and the remedy it names for a parent whose data
// is known unchanged (as here: only its link was rewritten), vhd
// set-parent --accept-modified-parent, is run.
func (m *mixRun) vhdSetParent() bool {
	if len(m.layers) < 2 {
		return false
	}
	i := m.rng.IntN(len(m.layers) - 1)
	parent, child := &m.layers[i], m.layers[i+1]
	moved := m.newPath()
	if err := os.Rename(parent.path, moved); err != nil {
		m.t.Fatal(err)
	}
	parent.path = moved
	if err := SetParent(child.path, moved, SetParentOptions{}); err != nil {
		m.fatalf("vhd set-parent: %v", err)
	}
	m.note("vhd set-parent of layer %d", i+1)
	if i+2 < len(m.layers) {
		above := m.layers[i+2].path
		c, err := Open(above, Options{ReadOnly: true})
		if errors.Is(err, ErrParentModified) && strings.Contains(err.Error(), "vhd set-parent --accept-modified-parent "+above+" "+child.path) {
			if err := SetParent(above, child.path, SetParentOptions{AcceptModified: true}); err != nil {
				m.fatalf("vhd set-parent as the refusal advised: %v", err)
			}
			m.note("vhd set-parent of layer %d (advised)", i+2)
		} else if err != nil {
			m.fatalf("open layer %d: %v", i+2, err)
		} else {
			c.Close()
		}
	}
	return true
}

// verify checks every image with vhd-util check and vhd check, and reads
// every layer (with its chain) through vhdkit and vhd-util.
func (m *mixRun) verify() {
	m.t.Helper()
	for _, l := range m.layers {
		if err := blktap.CheckErr(m.t, l.path); err != nil {
			m.fatalf("%v", err)
		}
		rep, err := engine.CheckPath(l.path, engine.CheckOptions{})
		if err != nil || !rep.OK() {
			m.fatalf("vhd check %s: %v %v", l.path, err, rep.Problems)
		}
	}
	for i := range m.layers {
		m.compare(&m.layers[i])
	}
}

func (m *mixRun) compare(l *mixLayer) {
	m.t.Helper()
	c, err := Open(l.path, Options{ReadOnly: true})
	if err != nil {
		m.fatalf("open %s: %v", l.path, err)
	}
	got := make([]byte, c.Size())
	_, err = c.ReadAt(got, 0)
	c.Close()
	if err != nil {
		m.fatalf("read %s: %v", l.path, err)
	}
	if !bytes.Equal(got, l.model) {
		m.fatalf("vhdkit reads %s (%d bytes) unlike the model (%d bytes) from byte %d", l.path, len(got), len(l.model), firstDiff(got, l.model))
	}
	if xen := blktap.Read(m.t, l.path, int64(len(l.model))); !bytes.Equal(xen, l.model) {
		m.fatalf("vhd-util reads %s unlike the model from byte %d", l.path, firstDiff(xen, l.model))
	}
}
