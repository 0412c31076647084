package vhdgen_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/fuzz/vhdgen"
)

// engineView opens path with vhdkit's engine (parents found as `vhd`
// finds them) and reads the whole disk; err is the refusal: the open
// fails or Check finds damage no repair can fix (a footer at the end
// damaged while its copy is intact is fatal for writing, fixable, and
// read through the copy).
func engineView(path string) (typ string, raw []byte, err error) {
	rep, err := engine.CheckPath(path, engine.CheckOptions{})
	if err != nil {
		return "", nil, err
	}
	for _, p := range rep.Problems {
		if p.Fatal && !p.Fixable {
			return "", nil, fmt.Errorf("check: %s", p)
		}
	}
	c, err := chains.Open(path, chains.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	raw = make([]byte, c.Size())
	if _, err := c.ReadAt(raw, 0); err != nil && !errors.Is(err, io.EOF) {
		return "", nil, fmt.Errorf("read: %w", err)
	}
	return c.Top().Type().String(), raw, nil
}

// TestEngineAgrees: every generated case (and the smaller variants
// minimising makes of some) is read by the engine as the reference
// decodes it, and every one the reference refuses is refused by the
// engine's check or open.
func TestEngineAgrees(t *testing.T) {
	n := 400
	if testing.Short() {
		n = 100
	}
	dir := t.TempDir()
	kinds := map[string]int{}
	for i := range n {
		c := vhdgen.Generate(1, i, vhdgen.DefaultOptions)
		cases := []vhdgen.Case{c}
		if i%20 == 0 { // the minimiser's variants too
			cases = append(cases, c.Shrinks()[:min(8, len(c.Shrinks()))]...)
		}
		for k, c := range cases {
			kinds[agree(t, c, filepath.Join(dir, fmt.Sprintf("%d-%d", i, k)))]++
		}
	}
	t.Logf("cases: %v", kinds)
	if kinds["valid"] < n/3 || kinds["corrupt"] < n/10 {
		t.Errorf("generated %v: too few of a kind", kinds)
	}
}

// checkImage ends a test that wrote a valid image: engine.Check finds
// nothing fatal in it (data under clear bits, which Junk puts there on
// purpose, is a warning).
func checkImage(t *testing.T, path string) {
	t.Helper()
	rep, err := engine.CheckPath(path, engine.CheckOptions{})
	if err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	for _, p := range rep.Problems {
		if p.Fatal {
			t.Errorf("check %s: %s", path, p)
		}
	}
}

// agree writes case c into dir, holds the engine to the reference on it,
// and returns the case's kind.
func agree(t *testing.T, c vhdgen.Case, dir string) string {
	t.Helper()
	b, err := c.Build()
	if err != nil {
		t.Fatalf("case %d (%s): %v", c.Index, c.Describe(), err)
	}
	path, err := b.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	typ, raw, err := engineView(path)
	switch {
	case b.View == nil && err == nil:
		t.Errorf("case %d (%s): the engine reads an image that must be refused (%s)", c.Index, c.Describe(), b.Refusal)
	case b.View != nil && err != nil:
		t.Errorf("case %d (%s): the engine refuses a valid image: %v", c.Index, c.Describe(), err)
	case b.View != nil && (typ != b.View.Type || !bytes.Equal(raw, b.View.Raw)):
		t.Errorf("case %d (%s): the engine reads a %s disk of %d bytes, the reference a %s of %d (bytes differ at %d)",
			c.Index, c.Describe(), typ, len(raw), b.View.Type, b.View.Size, firstDiff(raw, b.View.Raw))
	}
	if b.View != nil && b.Case.Mutation == nil {
		for _, l := range c.Layers {
			checkImage(t, filepath.Join(dir, l.Name))
		}
	}
	return b.Kind()
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
