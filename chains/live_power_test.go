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
	"testing"

	"vhdkit/engine"
	"vhdkit/engine/crashfile"
)

// Power loss during live changes. The files a live change writes (the
// top, the merge target, the new top a snapshot makes) run on crashfiles
// sharing one count of syncs; at the cut'th sync the power goes on all
// of them at once (each keeps a random part of what it had not synced)
// and the folder's other files (the journal, the mark, which name the
// new top has) are taken as they stand: each is synced, and its folder,
// before the code goes on, so the window between a rename and its
// folder's sync is the one thing not modelled.
//
// Where the files cannot be reached: the journal and the mark are
// written with os files (merge_journal.go), not through engine.File, so
// a cut never lands inside their writes; only before or after each.

// livePower is one run with a cut.
type livePower struct {
	t       *testing.T
	dir     string
	cut     int
	syncs   int
	rng     *rand.Rand
	files   map[string]*crashfile.File // by every name each has had
	folder  folderState                // the folder at the cut
	crashed map[string][]byte          // what the medium holds, by name
}

func (lp *livePower) sim(path string, f *crashfile.File) *crashfile.File {
	f.BeforeSync = func(int) error {
		if lp.crashed != nil {
			return errPowerLost
		}
		if lp.syncs++; lp.syncs == lp.cut {
			lp.crash()
			return errPowerLost
		}
		return nil
	}
	lp.files[path] = f
	return f
}

// crash cuts the power: each simulated file crashes once, whatever its
// names.
func (lp *livePower) crash() {
	lp.folder = captureFolder(lp.t, lp.dir)
	lp.crashed = map[string][]byte{}
	done := map[*crashfile.File][]byte{}
	for _, p := range slices.Sorted(maps.Keys(lp.files)) {
		f := lp.files[p]
		if _, ok := done[f]; !ok {
			done[f] = f.Crash(lp.rng).Durable()
		}
		lp.crashed[p] = done[f]
	}
}

// land makes the real folder what the medium holds after the cut.
func (lp *livePower) land() {
	st := folderState{}
	for name, b := range lp.folder {
		if c, ok := lp.crashed[filepath.Join(lp.dir, name)]; ok {
			b = c
		}
		st[name] = b
	}
	st.restore(lp.t, lp.dir)
}

// seams runs the merge target and a new top on simulated files.
func (lp *livePower) seams() (restore func()) {
	oldTarget, oldCreate, oldOpen := openMergeTarget, createLayer, openLayer
	openMergeTarget = func(path string, opts engine.Options) (*engine.Image, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return engine.OpenFile(lp.sim(path, crashfile.FromBytes(b)), path, opts)
	}
	createLayer = func(path string, opts engine.CreateOptions) (*engine.Image, error) {
		if err := os.WriteFile(path, nil, 0o644); err != nil { // a name to rename
			return nil, err
		}
		return engine.CreateFile(lp.sim(path, crashfile.New()), path, opts)
	}
	openLayer = func(path string, opts engine.Options) (*engine.Image, error) {
		f, ok := lp.files[path+".creating"]
		if !ok {
			return nil, fmt.Errorf("%s was not made by createLayer", path)
		}
		lp.files[path] = f
		return engine.OpenFile(f.Reopen(), path, opts)
	}
	return func() { openMergeTarget, createLayer, openLayer = oldTarget, oldCreate, oldOpen }
}

// powerChain makes base.vhd (version 1 everywhere) and top.vhd over it
// (version 2 over [1, 2) MiB), or with middle, base.vhd, mid.vhd over it
// (version 2) and an empty top.vhd over that; and opens them as a live
// chain with the top on a simulated file.
func (lp *livePower) powerChain(middle bool) *Chain {
	t := lp.t
	base, top := filepath.Join(lp.dir, "base.vhd"), filepath.Join(lp.dir, "top.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: powerDiskSize, BlockSize: 512 << 10})
	if err != nil {
		t.Fatal(err)
	}
	writeVersion(t, img, 1, 0, powerDiskSize)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	below := []string{base}
	if middle {
		below = []string{filepath.Join(lp.dir, "mid.vhd"), base}
	}
	tc, err := CreateChild(base, top, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeVersion(t, tc, 2, 1<<20, 1<<20)
	if err := tc.Close(); err != nil {
		t.Fatal(err)
	}
	if middle { // what top holds is mid's, under an empty top
		if err := os.Rename(top, below[0]); err != nil {
			t.Fatal(err)
		}
		if tc, err = CreateChild(below[0], top, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := tc.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(top)
	if err != nil {
		t.Fatal(err)
	}
	topImg, err := engine.OpenFile(lp.sim(top, crashfile.FromBytes(b)), top, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := &Chain{layers: []Layer{{Image: topImg, Path: top}}}
	for _, p := range below {
		img, err := engine.Open(p, engine.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		c.layers = append(c.layers, Layer{Image: img, Path: p, Found: "test"})
	}
	c.wire()
	return c
}

const powerDiskSize = 4 << 20

func writeVersion(t *testing.T, d engine.Disk, seq uint64, off, n int64) {
	t.Helper()
	p := make([]byte, n)
	fillVersion(p, 0, seq, off)
	if _, err := d.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

// powerStep is a write (of version seq over [off, off+n)), a Flush, or
// the live change under test.
type powerStep struct {
	off, n int64
	flush  bool
	change bool
}

// powerSteps write, flush, write, change, write, flush, write: a write
// before the change that only the change makes durable, and flushed and
// unflushed writes after it.
var powerSteps = []powerStep{
	{off: 0, n: 256 << 10}, {flush: true}, {off: 128 << 10, n: 256 << 10},
	{change: true},
	{off: 64 << 10, n: 128 << 10}, {flush: true}, {off: 300 << 10, n: 800 << 10},
}

// powerModel follows what the steps did: the versions of each chunk,
// the last version flushed and the last one attempted.
type powerModel struct {
	hist      [][]uint64
	flushed   uint64 // the last seq a completed Flush covers
	attempted uint64
}

func newPowerModel() *powerModel {
	m := &powerModel{hist: make([][]uint64, powerDiskSize/killChunk), flushed: 2, attempted: 2}
	for x := range m.hist {
		m.hist[x] = []uint64{1}
		if off := int64(x) * killChunk; off >= 1<<20 && off < 2<<20 {
			m.hist[x] = append(m.hist[x], 2)
		}
	}
	return m
}

// run plays the steps on c until one fails (the power is gone).
func (m *powerModel) run(c *Chain, change func(*Chain, *powerModel) error) error {
	for _, s := range powerSteps {
		var err error
		switch {
		case s.change:
			err = change(c, m)
		case s.flush:
			if err = c.Flush(); err == nil {
				m.flushed = m.attempted
			}
		default:
			err = m.write(c, s.off, s.n)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// write writes the next version over [off, off+n).
func (m *powerModel) write(c *Chain, off, n int64) error {
	m.attempted++
	for o := off; o < off+n; o += killChunk {
		m.hist[o/killChunk] = append(m.hist[o/killChunk], m.attempted)
	}
	p := make([]byte, n)
	fillVersion(p, 0, m.attempted, off)
	_, err := c.WriteAt(p, off)
	return err
}

// writeAt makes the change write [off, off+n) when it reaches point
// (the first time), as a writer racing it would.
func writeAt(c *Chain, m *powerModel, point string, off, n int64) {
	done := false
	liveHook = func(p string) {
		if p == point && !done {
			done = true
			m.write(c, off, n)
		}
	}
}

// check fails unless every sector holds the last flushed version of its
// chunk or one written after it.
func (m *powerModel) check(t *testing.T, got []byte, what string) {
	t.Helper()
	for x, h := range m.hist {
		var allowed []uint64
		for _, v := range h {
			if v <= m.flushed {
				allowed = []uint64{v}
			} else if v <= m.attempted {
				allowed = append(allowed, v)
			}
		}
		for s := range killChunk / sectorSize {
			sector := int64(x)*killChunk/sectorSize + int64(s)
			sv := readSector(got[sector*sectorSize:(sector+1)*sectorSize], sector)
			if !sv.ok || sv.w != 0 || !slices.Contains(allowed, sv.seq) {
				t.Fatalf("%s: sector %d holds %s; allowed versions %v (flushed up to %d)", what, sector, describeSector(sv), allowed, m.flushed)
			}
		}
	}
}

// TestLiveSnapshotPowerLoss cuts the power at each sync of a live
// snapshot and the writes around it (the top's flush and stamp, the new
// top's creation, the freeze, the flushes after): after `vhd repair`, the
// folder's one leaf opens and holds every flushed write, every image
// checks clean, and a snapshot and a merge then complete.
func TestLiveSnapshotPowerLoss(t *testing.T) {
	testLivePowerLoss(t, func(dir string) func(*Chain, *powerModel) error {
		return func(c *Chain, m *powerModel) error {
			// A write after the top's first flush: only the freeze in
			// the gate makes it durable.
			writeAt(c, m, "snapshot:installed", 2<<20, 256<<10)
			return c.Snapshot(filepath.Join(dir, "new.vhd"))
		}
	})
}

// TestLiveMergePowerLoss does the same for a live merge of the top: its
// journal and mark, the copy, the target's flush, the journal marked
// Copied, the swap, the deletions.
func TestLiveMergePowerLoss(t *testing.T) {
	testLivePowerLoss(t, func(dir string) func(*Chain, *powerModel) error {
		return func(c *Chain, m *powerModel) error {
			// A write during the copy, over what it copies: a later pass
			// or the last one, in the gate, copies it again.
			writeAt(c, m, "merge:copy", 1<<20, 256<<10)
			_, err := c.Merge(context.Background(), "", nil)
			return err
		}
	})
}

// TestLiveMiddleMergePowerLoss does the same for a live merge of a
// middle layer: the copy into its parent, the parent frozen, the journal
// marked Copied, the top re-linked onto the parent in the gate.
func TestLiveMiddleMergePowerLoss(t *testing.T) {
	testLivePowerLoss(t, func(dir string) func(*Chain, *powerModel) error {
		return func(c *Chain, m *powerModel) error {
			writeAt(c, m, "middle:copy", 1<<20, 256<<10)
			_, err := c.Merge(context.Background(), filepath.Join(dir, "mid.vhd"), nil)
			return err
		}
	}, true)
}

func testLivePowerLoss(t *testing.T, change func(dir string) func(*Chain, *powerModel) error, middle ...bool) {
	defer func() { liveHook = nil }()
	for i := 2; ; i++ {
		lp := &livePower{t: t, dir: t.TempDir(), cut: i / 2, rng: rand.New(rand.NewPCG(uint64(i), 4)), files: map[string]*crashfile.File{}}
		restore := lp.seams()
		c := lp.powerChain(len(middle) > 0)
		m := newPowerModel()
		err := m.run(c, change(lp.dir))
		liveHook = nil
		c.Close() // the power is gone: whatever this writes is lost
		restore()
		if lp.crashed == nil {
			if err != nil {
				t.Fatalf("without a power cut: %v", err)
			}
			if lp.syncs < 6 {
				t.Fatalf("only %d syncs", lp.syncs)
			}
			t.Logf("power cut at each of %d syncs, 2 ways each", lp.syncs)
			return
		}
		if err != nil && !errors.Is(err, errPowerLost) { // nil: the cut came as the chain closed
			t.Fatalf("cut %d: %v", lp.cut, err)
		}
		lp.land()
		// The change again, if it did not finish: the same snapshot name.
		k := &killRun{t: t, run: lp.cut, dir: lp.dir, mode: "live", ev: &killEvents{lastOp: "B 0 snapshot " + filepath.Join(lp.dir, "new.vhd")}}
		k.repairAndFinish()
		rc := k.openNewest()
		got := make([]byte, powerDiskSize)
		if _, err := rc.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		m.check(t, got, fmt.Sprintf("cut at sync %d", lp.cut))
		k.changeAgain(rc, got)
	}
}
