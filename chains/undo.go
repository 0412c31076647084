package chains

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"vhdkit/engine"
)

// Undo disks: like Virtual Server's, an undo disk (.vud) is a
// differencing image over a disk that takes every write while the disk is
// used, so the changes can be kept for later, committed into the disk, or
// discarded. The disk itself is never written while the undo disk exists.

// UndoPath is where the undo disk of image lives: beside it, with the
// extension .vud (disk.vhd -> disk.vud).
func UndoPath(image string) string {
	return strings.TrimSuffix(image, filepath.Ext(image)) + ".vud"
}

// OpenUndo opens image with its undo disk on top, creating the undo disk
// if there is none. created says which.
func OpenUndo(image string, opts Options) (c *Chain, created bool, err error) {
	vud := UndoPath(image)
	if _, err := os.Stat(vud); err == nil {
		c, err := Open(vud, opts)
		if err != nil {
			return nil, false, err
		}
		if err := checkUndoOf(c, image); err != nil {
			c.Close()
			return nil, false, err
		}
		c.undoOf, c.undoMade = image, adoptEmpty(c)
		return c, false, nil
	}
	c, err = CreateChild(image, vud, CreateOptions{Open: opts})
	if err != nil {
		return nil, false, err
	}
	c.undoOf, c.undoMade = image, true
	return c, true, nil
}

// checkUndoOf makes sure an undo disk's parent is image.
func checkUndoOf(c *Chain, image string) error {
	if c.Depth() < 2 {
		return fmt.Errorf("%s is not a differencing image: not an undo disk", c.layers[0].Path)
	}
	want, err := idOf(image)
	if err != nil {
		return err
	}
	if got, err := idOf(c.layers[1].Path); err != nil || got != want {
		return fmt.Errorf("%s is the undo disk of %s, not of %s", c.layers[0].Path, c.layers[1].Path, image)
	}
	return nil
}

// UndoStatus describes an image's undo disk.
type UndoStatus struct {
	Image    string `json:"image"`
	UndoDisk string `json:"undo_disk"`
	Exists   bool   `json:"exists"`
	// Changes is what the undo disk holds, as a commit copies it.
	Changes
	Allocated int64 `json:"allocated_bytes"` // its blocks, whole
	FileBytes int64 `json:"file_bytes"`
}

// Status reports whether image has an undo disk and how much it holds.
func Status(image string, opts Options) (*UndoStatus, error) {
	st := &UndoStatus{Image: image, UndoDisk: UndoPath(image)}
	fi, err := os.Stat(st.UndoDisk)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	st.Exists, st.FileBytes = true, fi.Size()
	img, err := engine.Open(st.UndoDisk, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		return nil, err
	}
	defer img.Close()
	st.Allocated = img.AllocatedBytes()
	if st.Changes, err = layerChanges(img); err != nil {
		return nil, err
	}
	return st, nil
}

// Commit merges image's undo disk into image and deletes it.
func Commit(ctx context.Context, image string, opts MergeOptions) (*MergeResult, error) {
	vud := UndoPath(image)
	if _, err := os.Stat(vud); err != nil {
		return nil, fmt.Errorf("%s has no undo disk (%s): nothing to commit", image, vud)
	}
	opts.Into = image
	return Merge(ctx, vud, opts)
}

// Discard deletes image's undo disk, after checking it is one: a
// differencing image recording image's UUID, not in use (its lock).
func Discard(image string) error {
	vud := UndoPath(image)
	u, err := engine.Open(vud, engine.Options{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s has no undo disk (%s): nothing to discard", image, vud)
	}
	if err != nil {
		return err
	}
	defer u.Close()
	base, err := engine.Open(image, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		return err
	}
	id := base.Footer().UUID
	base.Close()
	if h := u.Header(); u.Type() != engine.TypeDifferencing || h.ParentUUID != id {
		return fmt.Errorf("%s is not an undo disk of %s (its parent UUID does not match): not deleting it", vud, image)
	}
	deps, err := Dependents(u.Footer().UUID, vud, []string{vud}, nil)
	if err != nil {
		return err
	}
	if len(deps) > 0 {
		return fmt.Errorf("%s: %w: %s; deleting it would leave them without their parent: merge or delete them first", vud, ErrHasChildren, joinDependents(deps))
	}
	if err := os.Remove(vud); err != nil {
		return err
	}
	return syncDir(filepath.Dir(vud))
}
