package chains

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"vhdkit/engine"
)

// TestScanShowsCycles: images whose parents form a cycle (a <-> b, and c
// its own parent) are roots marked broken, naming the cycle; an image
// hanging off the cycle (d over a) stays a's child. Before the fix they
// hung off each other, from no root, and Scan returned nothing.
func TestScanShowsCycles(t *testing.T) {
	dir := t.TempDir()
	const size = 1 << 20
	a, b, c := engine.NewUUID(), engine.NewUUID(), engine.NewUUID()
	mk := func(name string, self, parent engine.UUID, parentName string) string {
		p := filepath.Join(dir, name)
		img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeDifferencing, Size: size, UUID: self,
			Parent: &engine.ParentInfo{UUID: parent, Name: parentName}})
		if err != nil {
			t.Fatal(err)
		}
		img.Close()
		return p
	}
	pa, pb, pc := mk("a.vhd", a, b, "b.vhd"), mk("b.vhd", b, a, "a.vhd"), mk("c.vhd", c, c, "c.vhd")
	pd := mk("d.vhd", engine.NewUUID(), a, "a.vhd")
	roots, err := Scan([]string{dir}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*Node{}
	for _, r := range roots {
		got[r.Path] = r
	}
	for _, p := range []string{pa, pb, pc} {
		n := got[p]
		if n == nil || !strings.HasPrefix(n.Broken, ErrCycle.Error()) || !strings.Contains(n.Broken, p) {
			t.Errorf("%s: %+v, want a root marked broken by a cycle", p, n)
		}
	}
	if n := got[pa]; n == nil || len(n.Children) != 1 || n.Children[0].Path != pd {
		t.Errorf("d should hang off a: %+v", n)
	}
	if len(roots) != 3 {
		t.Errorf("%d roots, want a, b and c", len(roots))
	}
	checkClean(t, pd)
}

// hostileBigBAT writes a dynamic image that claims a legal BAT of 134M
// entries (2040 GiB in 16 KiB blocks): a sparse file of 534 MB whose
// table is a hole, a few KiB on disk.
func hostileBigBAT(t *testing.T, path string) {
	t.Helper()
	img, err := engine.Create(path, engine.CreateOptions{Type: engine.TypeDynamic, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ft, h := img.Footer(), *img.Header()
	img.Close()
	ft.CurrentSize, ft.OriginalSize = engine.MaxSize, engine.MaxSize
	h.BlockSize = 16 << 10
	h.MaxTableEntries = uint32(engine.MaxSize / (16 << 10))
	end := int64(h.TableOffset) + int64(h.MaxTableEntries)*4
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fraw, hraw := ft.Marshal(), h.Marshal()
	for _, size := range []int64{0, end + engine.FooterSize} { // nothing but holes
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
	}
	for off, b := range map[int64][]byte{0: fraw[:], int64(ft.DataOffset): hraw[:], end: fraw[:]} {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
}

// TestScanOfHostileImageIsCheap: a folder scan (tree, and merge's search
// for dependents) reads footer and header only, so an image claiming a
// 534 MB table costs neither time nor memory. Before the fix each image
// was opened whole: the table was read and held (seconds, over 500 MB).
func TestScanOfHostileImageIsCheap(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 2, 1<<20, 40)
	hostile := filepath.Join(dir, "hostile.vhd")
	hostileBigBAT(t, hostile)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	roots, err := Scan([]string{dir}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	base, err := engine.Open(paths[0], engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	deps, err := Dependents(base.Footer().UUID, paths[0], nil, nil)
	base.Close()
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("scan and dependents of a folder with a 534 MB BAT claim: %v, %d KiB allocated", took, alloc>>10)
	if took > 2*time.Second || alloc > 8<<20 {
		t.Errorf("scanning took %v and allocated %d MiB; want well under 2 s and 8 MiB", took, alloc>>20)
	}
	if len(deps) != 1 || deps[0] != (Dependent{Path: paths[1]}) {
		t.Errorf("dependents of the base: %q, want %s", deps, paths[1])
	}
	if len(roots) != 2 {
		t.Fatalf("%d roots, want the chain and the hostile image", len(roots))
	}
	for _, r := range roots {
		if r.Path == hostile && (r.Error != "" || r.Size != engine.MaxSize) {
			t.Errorf("hostile image listed as %+v", r)
		}
	}
	checkClean(t, paths...)
}
