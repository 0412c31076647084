package chains

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"vhdkit/engine"
)

// The randomised model: a tree of images (children of any image, several
// siblings, several leaves) kept beside a byte-slice model of what each
// image reads as. Random steps write, zero and trim leaves, add children,
// merge (into the parent, --into an ancestor, from the middle of the
// tree, sometimes with --force), compact, resize and reopen; after every
// step EVERY image is opened and compared byte for byte with its model,
// and every image file passes the consistency check. A merge the model
// says must be refused (ErrHasChildren) must change nothing.
//
// The CI run is TestRandomTreeOperations (seconds). The long run is a
// benchmark, one operation sequence per iteration:
//
//	go test ./chains -run '^$' -bench RandomTreeModel -benchtime 1000x

const modelSteps = 60

func TestRandomTreeOperations(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	if testing.Short() {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			m := runTreeModel(t, seed, modelSteps)
			t.Logf("seed %d: %d steps, up to %d images; %d merges (%d children moved onto the target, %d siblings left invalid by --force), %d refused",
				seed, modelSteps, m.maxImages, m.merged, m.relinked, m.invalidated, m.refused)
		})
	}
}

func BenchmarkRandomTreeModel(b *testing.B) {
	seed := uint64(1000)
	var merged, relinked, invalidated, refused int
	for b.Loop() {
		seed++
		m := runTreeModel(b, seed, modelSteps)
		merged, relinked, invalidated, refused = merged+m.merged, relinked+m.relinked, invalidated+m.invalidated, refused+m.refused
	}
	b.ReportMetric(float64(merged), "merges")
	b.ReportMetric(float64(relinked), "moved-children")
	b.ReportMetric(float64(invalidated), "forced-siblings")
	b.ReportMetric(float64(refused), "refused")
}

// treeModel is the tree on disk and its model.
type treeModel struct {
	tb   testing.TB
	rng  *rand.Rand
	dir  string
	seed uint64
	step int
	par  map[string]string // image -> parent ("" for the base)
	view map[string][]byte // what each image reads as
	next int
	// counts of what happened, for the log
	merged, refused, relinked, invalidated, maxImages int
}

func runTreeModel(tb testing.TB, seed uint64, steps int) *treeModel {
	m := &treeModel{tb: tb, rng: rand.New(rand.NewPCG(seed, 77)), dir: tb.TempDir(), seed: seed,
		par: map[string]string{}, view: map[string][]byte{}}
	size := int64(1<<20 + 512*m.rng.Int64N(64))
	img, err := engine.Create(m.path("n0"), engine.CreateOptions{Type: engine.TypeDynamic, Size: size, BlockSize: 512 << 10})
	if err != nil {
		tb.Fatal(err)
	}
	img.Close()
	m.par["n0"], m.view["n0"] = "", make([]byte, size)
	for m.step = 0; m.step < steps; m.step++ {
		switch k := m.rng.IntN(20); {
		case k < 7:
			m.write()
		case k < 11:
			m.branch()
		case k < 16:
			m.merge()
		case k < 18:
			m.compact()
		case k == 18:
			m.resize()
		}
		m.verifyAll()
		m.maxImages = max(m.maxImages, len(m.par))
	}
	return m
}

func (m *treeModel) path(n string) string { return filepath.Join(m.dir, n+".vhd") }

func (m *treeModel) where() string { return fmt.Sprintf("seed %d step %d", m.seed, m.step) }

func (m *treeModel) names() []string { return slices.Sorted(maps.Keys(m.par)) }

func (m *treeModel) children(n string) []string {
	var out []string
	for _, c := range m.names() {
		if m.par[c] == n {
			out = append(out, c)
		}
	}
	return out
}

func (m *treeModel) leaves() []string {
	var out []string
	for _, n := range m.names() {
		if len(m.children(n)) == 0 {
			out = append(out, n)
		}
	}
	return out
}

func (m *treeModel) pick(list []string) string { return list[m.rng.IntN(len(list))] }

// write changes a random leaf.
func (m *treeModel) write() {
	leaf := m.pick(m.leaves())
	c, err := Open(m.path(leaf), Options{})
	if err != nil {
		m.tb.Fatalf("%s: open %s: %v", m.where(), leaf, err)
	}
	randomOps(m.tb, m.rng, c, m.view[leaf], 1+m.rng.IntN(3))
	if err := c.Close(); err != nil {
		m.tb.Fatal(err)
	}
}

// branch adds a child to a random image: a snapshot of a leaf, another
// child of an inner image.
func (m *treeModel) branch() {
	if len(m.par) >= 10 {
		m.write()
		return
	}
	p := m.pick(m.names())
	if m.rng.IntN(3) > 0 {
		p = m.pick(m.leaves()) // mostly deeper, sometimes wider
	}
	m.next++
	name := fmt.Sprintf("n%d", m.next)
	create := CreateChild
	if len(m.children(p)) == 0 {
		create = Snapshot
	}
	c, err := create(m.path(p), m.path(name), CreateOptions{})
	if err != nil {
		m.tb.Fatalf("%s: child %s of %s: %v", m.where(), name, p, err)
	}
	c.Close()
	m.par[name], m.view[name] = p, slices.Clone(m.view[p])
}

// merge merges a random differencing image into its parent or a further
// ancestor, checking the outcome against what the model expects.
func (m *treeModel) merge() {
	var diffs, inner []string
	for _, n := range m.names() {
		if m.par[n] != "" {
			diffs = append(diffs, n)
			if len(m.children(n)) > 0 {
				inner = append(inner, n)
			}
		}
	}
	if len(diffs) == 0 {
		m.write()
		return
	}
	x := m.pick(diffs)
	if len(inner) > 0 && m.rng.IntN(2) == 0 {
		x = m.pick(inner) // a merge from the middle of the tree
	}
	layers := []string{x}
	for p := m.par[x]; p != ""; p = m.par[p] {
		layers = append(layers, p)
	}
	k := 1
	if m.rng.IntN(2) == 0 {
		k = 1 + m.rng.IntN(len(layers)-1)
	}
	into := ""
	if k > 1 || m.rng.IntN(2) == 0 {
		into = m.path(layers[k])
	}
	force := m.rng.IntN(4) == 0
	refuse, others := m.mergeBlockers(layers, k, force)
	what := fmt.Sprintf("%s: merge %s into %s (force %v)", m.where(), x, layers[k], force)
	_, err := Merge(context.Background(), m.path(x), MergeOptions{Into: into, Force: force})
	if refuse {
		if !errors.Is(err, ErrHasChildren) {
			m.tb.Fatalf("%s: %v, want ErrHasChildren", what, err)
		}
		m.refused++
		return
	}
	if err != nil {
		m.tb.Fatalf("%s: %v", what, err)
	}
	target := layers[k]
	m.view[target] = m.view[x]
	m.merged++
	for _, c := range m.children(x) {
		m.par[c] = target
		m.relinked++
	}
	for _, l := range layers[:k] {
		delete(m.par, l)
		delete(m.view, l)
	}
	for _, o := range others {
		m.leftInvalid(o, what)
	}
}

// mergeBlockers says whether the merge of layers[0] into layers[k] must
// be refused, and which other children of the target --force leaves.
func (m *treeModel) mergeBlockers(layers []string, k int, force bool) (refuse bool, others []string) {
	for i := 1; i < k; i++ {
		for _, c := range m.children(layers[i]) {
			if c != layers[i-1] {
				refuse = true
			}
		}
	}
	for _, c := range m.children(layers[k]) {
		if c != layers[k-1] {
			others = append(others, c)
		}
	}
	return refuse || (len(others) > 0 && !force), others
}

// leftInvalid handles a child of a target a forced merge changed: its
// recorded parent timestamp no longer matches, so it (and everything
// over it) is refused; it is then deleted. If the merge copied nothing,
// the target is unchanged and the child still reads as before.
func (m *treeModel) leftInvalid(o, what string) {
	c, err := Open(m.path(o), Options{})
	if err == nil {
		verify(m.tb, c, m.view[o], what+": unchanged sibling "+o)
		c.Close()
		return
	}
	if !errors.Is(err, ErrParentModified) {
		m.tb.Fatalf("%s: sibling %s: %v, want ErrParentModified", what, o, err)
	}
	m.invalidated++
	var drop func(n string)
	drop = func(n string) {
		for _, c := range m.children(n) {
			drop(c)
		}
		if err := os.Remove(m.path(n)); err != nil {
			m.tb.Fatal(err)
		}
		delete(m.par, n)
		delete(m.view, n)
	}
	drop(o)
}

// compact compacts a random image; children stay valid.
func (m *treeModel) compact() {
	n := m.pick(m.names())
	if _, err := Compact(context.Background(), m.path(n), CompactOptions{}); err != nil {
		m.tb.Fatalf("%s: compact %s: %v", m.where(), n, err)
	}
}

// resize grows the base when it is alone (children fix their size).
func (m *treeModel) resize() {
	if len(m.par) != 1 {
		m.write()
		return
	}
	base := m.names()[0]
	size := int64(len(m.view[base]))
	grow := size + 512*m.rng.Int64N(4096)
	if err := Resize(m.path(base), grow, ResizeOptions{}); err != nil {
		m.tb.Fatalf("%s: resize: %v", m.where(), err)
	}
	m.view[base] = append(m.view[base], make([]byte, grow-size)...)
}

// verifyAll opens every image and compares it with the model, checks
// every image file, and makes sure the folder holds exactly the model's
// images, no merge journal or mark left.
func (m *treeModel) verifyAll() {
	for _, n := range m.names() {
		openVerify(m.tb, m.path(n), m.view[n], Options{})
	}
	var want []string
	for _, n := range m.names() {
		want = append(want, m.path(n))
	}
	got, _ := filepath.Glob(filepath.Join(m.dir, "*"))
	if !slices.Equal(got, want) {
		m.tb.Fatalf("%s: the folder holds %s, the model %s", m.where(), strings.Join(got, " "), strings.Join(want, " "))
	}
	checkClean(m.tb, want...)
}
