package chains

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/engine"
)

// makeChild writes a differencing image with whatever parent link the
// test wants, hostile or not.
func makeChild(t *testing.T, path string, size int64, p engine.ParentInfo) {
	t.Helper()
	img, err := engine.Create(path, engine.CreateOptions{Type: engine.TypeDifferencing, Size: size, Parent: &p})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
}

func makeBase(t *testing.T, path string, size int64) engine.Footer {
	t.Helper()
	img, err := engine.Create(path, engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	return img.Footer()
}

// openWithin opens with a deadline: a hostile chain must not hang.
func openWithin(t *testing.T, path string, opts Options) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		c, err := Open(path, opts)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("open hung")
		return nil
	}
}

func TestHostileChains(t *testing.T) {
	root := t.TempDir()
	allowed := filepath.Join(root, "allowed")
	outside := filepath.Join(root, "outside")
	os.Mkdir(allowed, 0o755)
	os.Mkdir(outside, 0o755)
	const size = 1 << 20
	out := makeBase(t, filepath.Join(outside, "base.vhd"), size)
	in := makeBase(t, filepath.Join(allowed, "base.vhd"), size)
	link := func(ft engine.Footer, locs ...engine.LocatorPath) engine.ParentInfo {
		return engine.ParentInfo{UUID: ft.UUID, Timestamp: ft.Timestamp, Name: "base.vhd", Locators: locs}
	}
	os.Symlink(filepath.Join(outside, "base.vhd"), filepath.Join(allowed, "sneaky.vhd"))
	fifo := filepath.Join(allowed, "fifo.vhd")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	small := makeBase(t, filepath.Join(allowed, "small.vhd"), size/2)
	conf := Options{ParentDirs: []string{allowed}}

	cases := []struct {
		name string
		p    engine.ParentInfo
		opts Options
		want error
	}{
		{"relative escape", link(out, engine.LocatorPath{Code: "W2ru", Path: `..\outside\base.vhd`}), conf, ErrOutsideAllowed},
		{"absolute path outside", link(out, engine.LocatorPath{Code: "MacX", Path: filepath.Join(outside, "base.vhd")}), conf, ErrOutsideAllowed},
		{"symlink leading out", engine.ParentInfo{UUID: out.UUID, Name: "x", Locators: []engine.LocatorPath{{Code: "W2ru", Path: `.\sneaky.vhd`}}}, conf, ErrOutsideAllowed},
		{"fifo", engine.ParentInfo{UUID: in.UUID, Name: "x", Locators: []engine.LocatorPath{{Code: "W2ru", Path: `.\fifo.vhd`}}}, Options{}, ErrNotRegular},
		{"device", engine.ParentInfo{UUID: in.UUID, Name: "x", Locators: []engine.LocatorPath{{Code: "MacX", Path: "/dev/zero"}}}, Options{}, ErrNotRegular},
		{"uuid mismatch", engine.ParentInfo{UUID: engine.NewUUID(), Name: "base.vhd"}, Options{}, ErrParentNotFound},
		{"modified parent", engine.ParentInfo{UUID: in.UUID, Timestamp: in.Timestamp - 100, Name: "base.vhd"}, Options{}, ErrParentModified},
		{"no parent at all", engine.ParentInfo{UUID: in.UUID, Name: "missing.vhd"}, Options{}, ErrParentNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			child := filepath.Join(allowed, "child-"+strings.ReplaceAll(tc.name, " ", "-")+".vhd")
			makeChild(t, child, size, tc.p)
			err := openWithin(t, child, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), child) {
				t.Errorf("error does not name the child: %v", err)
			}
		})
	}
	t.Run("a locator naming a qcow2 is passed over", func(t *testing.T) {
		qcow2 := make([]byte, 1<<16)
		copy(qcow2, "QFI\xfb\x00\x00\x00\x03")
		if err := os.WriteFile(filepath.Join(allowed, "old.vhd"), qcow2, 0o644); err != nil {
			t.Fatal(err)
		}
		child := filepath.Join(allowed, "child-locator-to-qcow2.vhd")
		makeChild(t, child, size, link(in, engine.LocatorPath{Code: "W2ru", Path: `.\old.vhd`}))
		if err := openWithin(t, child, Options{}); err != nil {
			t.Fatalf("the parent by name after a qcow2 locator: %v", err)
		}
	})
	t.Run("a parent of another size is read up to its end", func(t *testing.T) {
		child := filepath.Join(allowed, "child-of-small.vhd")
		makeChild(t, child, size, link(small, engine.LocatorPath{Code: "W2ru", Path: `.\small.vhd`}))
		if err := openWithin(t, child, Options{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("accept modified parent", func(t *testing.T) {
		child := filepath.Join(allowed, "child-modified-parent.vhd")
		if err := openWithin(t, child, Options{AcceptModifiedParent: true}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCycleAndDepthLimit(t *testing.T) {
	dir := t.TempDir()
	const size = 1 << 20
	a, b := engine.NewUUID(), engine.NewUUID()
	mk := func(name string, self, parent engine.UUID, parentName string) {
		img, err := engine.Create(filepath.Join(dir, name), engine.CreateOptions{Type: engine.TypeDifferencing, Size: size, UUID: self,
			Parent: &engine.ParentInfo{UUID: parent, Name: parentName}})
		if err != nil {
			t.Fatal(err)
		}
		img.Close()
	}
	mk("a.vhd", a, b, "b.vhd")
	mk("b.vhd", b, a, "a.vhd")
	if err := openWithin(t, filepath.Join(dir, "a.vhd"), Options{}); !errors.Is(err, ErrCycle) {
		t.Fatalf("cycle: %v, want ErrCycle", err)
	}
	paths, _ := buildChain(t, dir, 5, size, 10)
	if err := openWithin(t, paths[4], Options{MaxDepth: 3}); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("depth: %v, want ErrTooDeep", err)
	}
	if err := openWithin(t, paths[4], Options{MaxDepth: 5}); err != nil {
		t.Fatal(err)
	}
}

func TestTruncatedParent(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 2, 4<<20, 11)
	st, _ := os.Stat(paths[0])
	if err := os.Truncate(paths[0], st.Size()/2); err != nil {
		t.Fatal(err)
	}
	err := openWithin(t, paths[1], Options{})
	if !errors.Is(err, ErrParentNotFound) || !strings.Contains(err.Error(), "not a usable VHD") {
		t.Fatalf("truncated parent: %v", err)
	}
}
