package chains

import (
	"fmt"
	"os"
	"path/filepath"

	"vhdkit/engine"
)

// Snapshot cuts a new top layer, newTop, under the live chain: the top
// becomes a read-only parent (frozen in place, its write permission
// taken, as the offline snapshot does) and every write from then on goes
// to newTop. Readers see no change.
//
// Crash safety, in this order:
//
//  1. the top is flushed and its footer stamped (Image.Stamp) if this
//     open had not yet: its timestamp, the one newTop records, then
//     stays until the top is closed. A flush stamps only after a write,
//     so a top opened and not yet written would otherwise be stamped by
//     the first flush of a write arriving before the swap, and a crash
//     then would leave newTop recording a timestamp the top no longer
//     has: a child that does not open;
//  2. newTop is created complete under a temporary name, synced, renamed
//     into place and its folder synced: it exists whole or not at all;
//  3. the top is flushed again, outside the gate, so that the flush in
//     the gate has only the writes of the last moment to sync (the
//     pause: at a high write rate it grows with what is left unsynced);
//  4. under the gate: the top is flushed and frozen (nothing of it is
//     left unflushed, and its footer no longer changes), newTop's link is
//     checked against the top's timestamp (and rewritten were it to
//     differ), and the layers are swapped. Only then does a write reach
//     newTop.
//
// A crash before the swap leaves the old top whole, with newTop an empty
// child of it; a crash after leaves newTop holding what was written to
// it. Either way each image opens and holds every flushed write; the old
// top, now with a child, is refused for writing (guard.go) and the chain
// is served from newTop. Running Snapshot again with the same newTop
// takes over an empty child of the top left by an interrupted run.
func (c *Chain) Snapshot(newTop string) error {
	c.live.Lock()
	defer c.live.Unlock()
	if err := c.writableLive(); err != nil {
		return err
	}
	layers := c.Layers()
	top := layers[0]
	if err := refuseUnfinished(layers, -1); err != nil {
		return err
	}
	if c.undoOf != "" {
		return fmt.Errorf("%s is an undo disk: commit or discard it first ('vhd ctl undo commit|discard'), then snapshot", top.Path)
	}
	if err := top.Image.Stamp(); err != nil {
		return err
	}
	reachPoint("snapshot:flushed")
	child, err := prepareChild(top, newTop)
	if err != nil {
		return err
	}
	reachPoint("snapshot:installed")
	if err := top.Image.Flush(); err != nil { // step 3
		child.Close()
		return err
	}
	err = c.exclusive(func() error {
		reachPoint("snapshot:gate")
		if err := top.Image.Freeze(); err != nil {
			return err
		}
		reachPoint("snapshot:frozen")
		if err := relinkIfRestamped(child, newTop, top); err != nil {
			return err
		}
		c.layers = append([]Layer{c.newLayer(child, newTop)}, c.layers...)
		c.wireParents(1)
		reachPoint("snapshot:swapped")
		return nil
	})
	if err != nil {
		child.Close()
		return fmt.Errorf("snapshot %s: %w", newTop, err)
	}
	takeWritePermission(top.Path)
	return nil
}

// prepareChild makes newTop, an empty differencing image over top, and
// opens it for writing; or opens the empty child of top an interrupted
// snapshot left there.
func prepareChild(top Layer, newTop string) (*engine.Image, error) {
	if _, err := os.Lstat(newTop); err == nil {
		return adoptChild(top, newTop)
	}
	tmp, err := createAside(top, newTop)
	if err != nil {
		return nil, err
	}
	return installChild(tmp, newTop)
}

// createAside writes an empty differencing image over parent, meant to be
// named final, under a temporary name beside it, and returns that name.
// The image is complete and synced, but has no name of its own yet.
func createAside(parent Layer, final string) (string, error) {
	ft := parent.Image.Footer()
	locs, err := Locators(final, parent.Path)
	if err != nil {
		return "", err
	}
	if err := engine.CheckNewFileFolder(final); err != nil {
		return "", err // before final.creating, whose name would show
	}
	tmp := final + ".creating"
	os.Remove(tmp) // left by a crash: it never had a name of its own
	img, err := createLayer(tmp, engine.CreateOptions{
		Type: engine.TypeDifferencing, Size: parent.Image.Size(), BlockSize: parent.Image.BlockSize(),
		Parent: &engine.ParentInfo{UUID: ft.UUID, Timestamp: ft.Timestamp, Name: filepath.Base(parent.Path), Locators: locs},
	})
	if err != nil {
		return "", err
	}
	if err := img.Close(); err != nil {
		os.Remove(tmp)
		return "", err
	}
	reachPoint("create:aside")
	return tmp, nil
}

// installChild renames an image made by createAside to its name (over
// whatever had it: an atomic replacement), syncs the folder and opens it
// for writing.
func installChild(tmp, final string) (*engine.Image, error) {
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return nil, err
	}
	return openLayer(final, engine.Options{})
}

// createLayer makes the image a live change adds (a new top, a fresh
// undo disk) and openLayer opens it under its final name. Tests replace
// them to run that image on a file that simulates power loss.
var (
	createLayer = engine.Create
	openLayer   = engine.Open
)

// adoptChild opens an existing newTop if it is what an interrupted
// snapshot of top left: a differencing image over top that holds nothing.
// It is vetted read-only first: an open for writing repairs a damaged
// footer, and a file that is not ours must be left exactly as it was.
func adoptChild(top Layer, newTop string) (*engine.Image, error) {
	ro, err := engine.Open(newTop, engine.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("%s already exists and cannot be taken over: %w; choose another name", newTop, err)
	}
	ok := isEmptyChildOf(ro, top)
	ro.Close()
	if !ok {
		return nil, fmt.Errorf("%s already exists (not an empty child of %s); choose another name", newTop, top.Path)
	}
	img, err := engine.Open(newTop, engine.Options{})
	if err != nil {
		return nil, fmt.Errorf("%s already exists and cannot be taken over: %w; choose another name", newTop, err)
	}
	if !isEmptyChildOf(img, top) { // replaced in between
		img.Close()
		return nil, fmt.Errorf("%s changed while it was being taken over; choose another name", newTop)
	}
	return img, nil
}

// isEmptyChildOf says whether img is a differencing image over top that
// holds nothing.
func isEmptyChildOf(img *engine.Image, top Layer) bool {
	return img.Type() == engine.TypeDifferencing && img.Header().ParentUUID == top.Image.Footer().UUID && img.AllocatedBytes() == 0
}

// relinkIfRestamped rewrites child's parent link if the top's footer
// timestamp differs from the one child recorded. Step 1 of Snapshot
// stamps the top so that it does not; this keeps the link right should
// an image change its stamp some other way. Under the gate: no I/O runs
// on either image.
func relinkIfRestamped(child *engine.Image, childPath string, top Layer) error {
	ft := top.Image.Footer()
	if child.Header().ParentTimestamp == ft.Timestamp {
		return nil
	}
	locs, err := Locators(childPath, top.Path)
	if err != nil {
		return err
	}
	return child.SetParentLink(engine.ParentInfo{UUID: ft.UUID, Timestamp: ft.Timestamp, Name: filepath.Base(top.Path), Locators: locs})
}

// takeWritePermission removes the write permission of a frozen layer, as
// the offline snapshot does, so nothing writes it by accident. Best
// effort: the freeze in the process is what protects it.
func takeWritePermission(path string) {
	if st, err := os.Stat(path); err == nil {
		os.Chmod(path, st.Mode().Perm()&^0o222)
	}
}
