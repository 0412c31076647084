package chains

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"vhdkit/engine"
)

// holdReadOnly is the child process of holdInOtherProcess: it opens path
// read-only (a shared lock), says so, and holds it until its stdin closes.
func holdReadOnly(path string) int {
	img, err := engine.Open(path, engine.Options{ReadOnly: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("holding")
	io.Copy(io.Discard, os.Stdin)
	img.Close()
	return 0
}

// holdInOtherProcess opens path read-only in another process (this test
// binary, re-run) and returns when it holds it; release ends it.
func holdInOtherProcess(t *testing.T, path string) (release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", path)
	cmd.Env = append(os.Environ(), killEnv+"=hold-ro")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "holding\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the holder did not open %s: %q %v", path, line, err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			in.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("holder: %v", err)
			}
		}
	}
	t.Cleanup(release)
	return release
}

// TestLiveMergeRefused: a live merge that must not run (a view reads the
// target, the target has another child or an undo disk, another process
// reads the target) is refused while the chain is written; it leaves no
// journal or mark, the chain keeps its layers and serves every write;
// once the obstacle is gone, the merge runs.
func TestLiveMergeRefused(t *testing.T) {
	cases := []struct {
		name string
		want error
		// obstruct sets the obstacle up in dir around the chain c (base
		// <- mid <- top, merging top into mid) and returns what removes it.
		obstruct func(t *testing.T, c *Chain, mid string) func()
	}{
		{"a view of the target", ErrLayerInUse, func(t *testing.T, c *Chain, mid string) func() {
			v, err := c.View(mid)
			if err != nil {
				t.Fatal(err)
			}
			return func() { v.Close() }
		}},
		{"another child of the target", ErrHasChildren, func(t *testing.T, c *Chain, mid string) func() {
			other := filepath.Join(filepath.Dir(mid), "other.vhd")
			oc, err := CreateChild(mid, other, CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			oc.Close()
			return func() { os.Remove(other) }
		}},
		{"the target's undo disk", ErrHasUndoDisk, func(t *testing.T, c *Chain, mid string) func() {
			uc, err := CreateChild(mid, UndoPath(mid), CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			uc.Close()
			return func() { os.Remove(UndoPath(mid)) }
		}},
		{"another process reads the target", nil, func(t *testing.T, c *Chain, mid string) func() {
			return holdInOtherProcess(t, mid)
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			base, model := newLiveBase(t, dir, 8<<20, uint64(30+i))
			c := liveChainOf(t, dir, base, model, 2, uint64(30+i))
			defer c.Close()
			before := layerPaths(c)
			remove := tc.obstruct(t, c, before[1])
			lw := startWriters(c, model, 2, uint64(40+i))
			_, err := c.Merge(context.Background(), "", nil)
			lw.halt(t)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("merge: %v, want it refused (%v)", err, tc.want)
			}
			t.Logf("refused: %v", err)
			if got := layerPaths(c); !slices.Equal(got, before) {
				t.Fatalf("layers after the refusal %v, before %v", got, before)
			}
			noMergeFiles(t, dir)
			randomOps(t, randFrom(uint64(50+i)), c, model, 20)
			verify(t, c, model, "after the refusal")
			remove()
			if _, err := c.Merge(context.Background(), "", nil); err != nil {
				t.Fatalf("merge once the obstacle is gone: %v", err)
			}
			verify(t, c, model, "after the merge")
			paths := layerPaths(c)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			checkClean(t, paths...)
			noMergeFiles(t, dir)
		})
	}
}

// TestLiveSnapshotOverAnExistingFile: a snapshot whose new top's name is
// taken by anything but an empty child of the top that an interrupted
// snapshot left is refused, and the file is left exactly as it was; the
// chain serves on, and a snapshot to a free name works.
func TestLiveSnapshotOverAnExistingFile(t *testing.T) {
	dir := t.TempDir()
	base, model := newLiveBase(t, dir, 8<<20, 60)
	c := liveChainOf(t, dir, base, model, 1, 60)
	defer c.Close()
	taken := map[string]func(path string){
		"text.vhd": func(p string) { writeFile(t, p, []byte("not an image\n")) },
		"disk.vhd": func(p string) { // a dynamic image with data
			newLiveBaseAt(t, p, 8<<20, 61)
		},
		"sibling.vhd": func(p string) { // an empty child, but of the base
			sc, err := CreateChild(base, p, CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			sc.Close()
		},
		"damaged.vhd": func(p string) { // a dynamic image whose footer at the end is damaged
			newLiveBaseAt(t, p, 8<<20, 62)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-512+10] ^= 0xff
			writeFile(t, p, b)
		},
	}
	for name, make := range taken {
		p := filepath.Join(dir, name)
		make(p)
		was, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Snapshot(p)
		if err == nil {
			t.Fatalf("a snapshot over %s was allowed", name)
		}
		t.Logf("%s: %v", name, err)
		if now, _ := os.ReadFile(p); !slices.Equal(now, was) {
			t.Errorf("the refused snapshot changed %s", name)
		}
		if c.Depth() != 2 {
			t.Fatalf("after the refused snapshot over %s the chain has %d layers", name, c.Depth())
		}
		noMergeFiles(t, dir)
	}
	randomOps(t, randFrom(63), c, model, 20)
	if err := c.Snapshot(filepath.Join(dir, "free.vhd")); err != nil {
		t.Fatal(err)
	}
	randomOps(t, randFrom(64), c, model, 20)
	verify(t, c, model, "after the snapshot to a free name")
	// What a snapshot that failed after making its new top leaves: an
	// empty child of the top. The next snapshot to that name takes it over.
	left := filepath.Join(dir, "left.vhd")
	tmp, err := createAside(c.Layers()[0], left)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, left); err != nil {
		t.Fatal(err)
	}
	if err := c.Snapshot(left); err != nil {
		t.Fatalf("a snapshot over the empty child of the top an earlier one left: %v", err)
	}
	randomOps(t, randFrom(65), c, model, 20)
	verify(t, c, model, "after the snapshot that took over the empty child")
	paths := layerPaths(c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, paths...)
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// newLiveBaseAt is newLiveBase at a path of one's choosing.
func newLiveBaseAt(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	dir := t.TempDir()
	p, _ := newLiveBase(t, dir, size, seed)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, b)
}
