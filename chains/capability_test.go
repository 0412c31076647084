package chains

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"testing"

	"vhdkit/engine"
)

// capabilityChecks holds, for every optional capability engine declares,
// a check that a chain offers it and answers for the whole chain. A new
// capability in engine/capability.go fails TestChainForwardsEveryCapability
// until it is added here (and to capability.go).
var capabilityChecks = map[string]func(t *testing.T, k capKind, c *Chain){
	"FastZeroer": func(t *testing.T, k capKind, c *Chain) {
		fz, ok := any(c).(engine.FastZeroer)
		if !ok {
			t.Fatal("no ZeroIsFast")
		}
		for _, tc := range k.fastZeros {
			if got := fz.ZeroIsFast(tc.off, tc.n, engine.ZeroMayDeallocate); got != tc.fast {
				t.Errorf("ZeroIsFast(%#x, %#x) = %v, want %v (%s)", tc.off, tc.n, got, tc.fast, tc.why)
			}
		}
		if fz.ZeroIsFast(capBlock, capBlock, engine.ZeroKeepAllocated) {
			t.Error("ZeroIsFast with ZeroKeepAllocated: true, want false")
		}
		if !c.ReadOnly() {
			zeroAsPredicted(t, c)
		}
	},
	"ParentShower": func(t *testing.T, k capKind, c *Chain) {
		ps, ok := any(c).(engine.ParentShower)
		if !ok {
			t.Fatal("no ShowsParent")
		}
		if ps.ShowsParent() {
			t.Error("a chain says its holes show a parent; they read as zeros")
		}
		if got, want := c.Top().ShowsParent(), c.Depth() > 1; got != want {
			t.Errorf("the top's ShowsParent = %v, want %v", got, want)
		}
	},
	"WritebackStarter": func(t *testing.T, k capKind, c *Chain) {
		ws, ok := any(c).(engine.WritebackStarter)
		if !ok {
			t.Fatal("no StartWriteback")
		}
		if err := ws.StartWriteback(); err != nil {
			t.Errorf("StartWriteback: %v", err)
		}
	},
}

const capBlock = 2 << 20

// capKind is one way a chain is opened, with the FAST_ZERO answers it
// must give: the base holds data in block 0 only.
type capKind struct {
	name      string
	open      func(base, top string) (*Chain, error)
	fastZeros []fastZeroCase
}

type fastZeroCase struct {
	off, n int64
	fast   bool
	why    string
}

var capKinds = []capKind{
	{"image alone", func(base, top string) (*Chain, error) {
		// Alone: with its child, base may not be opened for writing.
		if err := os.Remove(top); err != nil {
			return nil, err
		}
		return Open(base, Options{})
	}, []fastZeroCase{
		{0, capBlock, true, "a whole block with data is freed"},
		{2 * capBlock, capBlock, true, "a whole empty block"},
		{512, 4096, false, "part of a block with data is written"},
		{capBlock + 512, 4096, true, "zeros in an unallocated block are dropped"},
		{100, 10, false, "a partial sector with data is rewritten"},
	}},
	{"differencing chain", func(_, top string) (*Chain, error) { return Open(top, Options{}) }, topCases},
	{"undo disk", func(base, _ string) (*Chain, error) {
		c, _, err := OpenUndo(base, Options{})
		return c, err
	}, topCases},
	{"read-only chain", func(_, top string) (*Chain, error) { return Open(top, Options{ReadOnly: true}) }, []fastZeroCase{
		{capBlock, capBlock, false, "read-only"},
	}},
}

// topCases: the top is empty, the base below holds block 0.
var topCases = []fastZeroCase{
	{0, capBlock, false, "the base's data must be hidden with written zeros"},
	{capBlock, 2 * capBlock, true, "nothing below: the zeros are dropped"},
	{capBlock + 512, 4096, true, "part of a block with nothing anywhere"},
	{512, 1024, false, "the second sector lies over the base's data"},
	{capBlock - 512, 1024, true, "the base's block holds nothing there"},
	{capBlock + 100, 10, true, "a partial sector with nothing anywhere"},
}

// zeroAsPredicted writes block 1 of the top, then zeros it after
// ZeroIsFast said it was fast: the top must end up holding nothing more
// than before the write.
func zeroAsPredicted(t *testing.T, c *Chain) {
	t.Helper()
	before := c.Top().AllocatedBytes()
	if _, err := c.WriteAt([]byte("data"), capBlock+4096); err != nil {
		t.Fatal(err)
	}
	if !c.ZeroIsFast(capBlock, capBlock, engine.ZeroMayDeallocate) {
		t.Fatal("ZeroIsFast of a whole written block with nothing below: false")
	}
	if err := c.Zero(capBlock, capBlock, engine.ZeroMayDeallocate); err != nil {
		t.Fatal(err)
	}
	if after := c.Top().AllocatedBytes(); after != before {
		t.Errorf("a zero said to be fast left %d bytes allocated, %d before", after, before)
	}
	buf := make([]byte, 8)
	if _, err := c.ReadAt(buf, capBlock+4092); err != nil || string(buf) != "\x00\x00\x00\x00\x00\x00\x00\x00" {
		t.Errorf("after the zero: %q %v", buf, err)
	}
}

// TestChainForwardsEveryCapability lists the capability interfaces in
// engine/capability.go and checks every way of opening a chain offers
// each (STYLE.md habit 16: a wrapper never loses a capability).
func TestChainForwardsEveryCapability(t *testing.T) {
	declared := engineCapabilities(t)
	for _, name := range declared {
		if capabilityChecks[name] == nil {
			t.Errorf("engine declares the capability %s, which this test does not check: forward it in chains/capability.go and add it here", name)
		}
	}
	for _, k := range capKinds {
		dir := t.TempDir()
		base, top := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "top.vhd")
		makeCapChain(t, base, top)
		c, err := k.open(base, top)
		if err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
		for _, name := range declared {
			if check := capabilityChecks[name]; check != nil {
				t.Run(k.name+"/"+name, func(t *testing.T) { check(t, k, c) })
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		checkClean(t, base)
		if _, err := os.Stat(top); err == nil {
			checkClean(t, top)
		}
		if k.name == "undo disk" && !c.UndoRemoved() { // removed if left empty
			checkClean(t, UndoPath(base))
		}
	}
}

// makeCapChain makes a 8 MiB dynamic base with data in block 0 and an
// empty child over it.
func makeCapChain(t *testing.T, base, top string) {
	t.Helper()
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: 4 * capBlock, BlockSize: capBlock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("base data"), 1024); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := CreateChild(base, top, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// engineCapabilities lists the interfaces declared in
// engine/capability.go.
func engineCapabilities(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "engine", "capability.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.TYPE {
			continue
		}
		for _, s := range g.Specs {
			if ts := s.(*ast.TypeSpec); isInterface(ts) {
				names = append(names, ts.Name.Name)
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("engine/capability.go declares no capability interfaces")
	}
	return names
}

func isInterface(ts *ast.TypeSpec) bool {
	_, ok := ts.Type.(*ast.InterfaceType)
	return ok
}
