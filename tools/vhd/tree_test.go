package main

import (
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/chains"
	"vhdkit/engine"
)

// TestTreeListsCycles: two images that are each other's parent are
// listed as broken by a cycle, as text and as JSON. Before the fix tree
// printed "no images" for them (and [] as JSON).
func TestTreeListsCycles(t *testing.T) {
	dir := t.TempDir()
	a, b := engine.NewUUID(), engine.NewUUID()
	for _, l := range []struct {
		name         string
		self, parent engine.UUID
		parentName   string
	}{{"a.vhd", a, b, "b.vhd"}, {"b.vhd", b, a, "a.vhd"}} {
		img, err := engine.Create(filepath.Join(dir, l.name), engine.CreateOptions{Type: engine.TypeDifferencing, Size: 1 << 20, UUID: l.self,
			Parent: &engine.ParentInfo{UUID: l.parent, Name: l.parentName}})
		if err != nil {
			t.Fatal(err)
		}
		img.Close()
	}
	r := vhdOK(t, "tree", dir)
	if strings.Contains(r.stdout, "no images") || strings.Count(r.stdout, "[BROKEN: differencing chain has a cycle") != 2 {
		t.Errorf("tree of a folder with a cycle:\n%s", r)
	}
	var forest []*chains.Node
	vhdJSON(t, &forest, "tree", "--json", dir)
	if len(forest) != 2 || !strings.Contains(forest[0].Broken, "cycle") || !strings.Contains(forest[1].Broken, "cycle") {
		t.Errorf("tree --json: %+v; want a and b, both broken by a cycle", forest)
	}
}
