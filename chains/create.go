package chains

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"vhdkit/engine"
)

// CreateOptions describe a new differencing image.
type CreateOptions struct {
	// BlockSize of the child; the parent's if it has one, else 2 MiB.
	BlockSize int64
	// Chain options used to open the parent (and check its own chain).
	Open Options
}

// Locators returns the parent locators a child at childPath records for
// parentPath, in this order: W2ru (relative to the child's folder, ".\"
// first, as Windows writes it), W2ku (the absolute path) and MacX (a
// file:// URL). The relative one comes first because Xen's blktap follows
// the first locator that opens (its own locators are all relative): a
// chain copied elsewhere, its original still in place, must read its own
// parent, the one vhdkit (which tries W2ru first whatever the order)
// reads too.
func Locators(childPath, parentPath string) ([]engine.LocatorPath, error) {
	absParent, err := filepath.Abs(parentPath)
	if err != nil {
		return nil, err
	}
	absChildDir, err := filepath.Abs(filepath.Dir(childPath))
	if err != nil {
		return nil, err
	}
	var locs []engine.LocatorPath
	if rel, err := filepath.Rel(absChildDir, absParent); err == nil {
		if !strings.HasPrefix(rel, "..") {
			rel = "./" + rel
		}
		locs = append(locs, engine.LocatorPath{Code: engine.LocatorW2ru, Path: strings.ReplaceAll(rel, "/", `\`)})
	}
	locs = append(locs, engine.LocatorPath{Code: engine.LocatorW2ku, Path: strings.ReplaceAll(absParent, "/", `\`)})
	locs = append(locs, engine.LocatorPath{Code: engine.LocatorMacX, Path: absParent})
	return locs, nil
}

// CreateChild makes a new differencing image at childPath over the image
// (or chain) at parentPath, which is opened read-only and checked first.
// It returns the new chain, open for writing.
func CreateChild(parentPath, childPath string, opts CreateOptions) (*Chain, error) {
	popts := opts.Open
	popts.ReadOnly = true
	parent, err := Open(parentPath, popts)
	if err != nil {
		return nil, err
	}
	pimg := parent.Top()
	ft := pimg.Footer()
	bs := opts.BlockSize
	if bs == 0 {
		bs = pimg.BlockSize()
	}
	locs, err := Locators(childPath, parentPath)
	if err != nil {
		parent.Close()
		return nil, err
	}
	child, err := engine.Create(childPath, engine.CreateOptions{
		Type: engine.TypeDifferencing, Size: pimg.Size(), BlockSize: bs,
		Parent: &engine.ParentInfo{UUID: ft.UUID, Timestamp: ft.Timestamp, Name: filepath.Base(parentPath), Locators: locs},
	})
	if err != nil {
		parent.Close()
		return nil, err
	}
	c := &Chain{layers: append([]Layer{{Image: child, Path: childPath}}, parent.layers...), opts: popts}
	c.opts.ReadOnly = false
	c.layers[1].Found = "new child"
	c.wire()
	return c, nil
}

// Snapshot freezes image as a read-only parent and starts newTop on it:
// the image's write permission is removed (so nothing writes it by
// accident and invalidates newTop) and newTop is created over it.
//
// Refused while image has an undo disk (its pending changes would be
// left out of the snapshot, and could no longer be committed) or another
// process has it open for writing (a mount or server: the shared lock
// CreateChild takes fails, naming the holder; the lock then keeps a
// writer from starting until newTop exists). Readers do not block a
// snapshot: other children's chains hold their parents that way, and a
// new child of a shared parent changes nothing they read.
func Snapshot(image, newTop string, opts CreateOptions) (*Chain, error) {
	if _, err := os.Stat(newTop); err == nil {
		return nil, fmt.Errorf("%s already exists; choose another name for the new top", newTop)
	}
	if err := refuseSnapshotOfUndo(image); err != nil {
		return nil, err
	}
	c, err := CreateChild(image, newTop, opts)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(image); err == nil {
		if err := os.Chmod(image, st.Mode().Perm()&^0o222); err != nil {
			c.Close()
			return nil, fmt.Errorf("make %s read-only: %w", image, err)
		}
	}
	return c, nil
}

// refuseSnapshotOfUndo refuses to snapshot an image with an undo disk.
func refuseSnapshotOfUndo(image string) error {
	img, err := engine.Open(image, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		return err
	}
	id := img.Footer().UUID
	img.Close()
	return refuseUndoDisk(image, id, nil, forSnapshot)
}
