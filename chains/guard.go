package chains

import (
	"errors"
	"fmt"
	"os"

	"vhdkit/engine"
	"vhdkit/internal/shq"
)

// Writing an image changes what every image over it reads: its undo disk
// and its differencing children hold changes made over the image as it
// was, and read the rest from it. A parent written after its child was
// made gets a new timestamp, so the child is refused from then on (and
// with --accept-modified-parent would read a mix of old and new data).
// So an image others depend on is never opened for writing.
//
// Which paths write an image, and what each does about it:
//
//   - Open for writing (vhd mount --no-undo, vhd serve without --read-only
//     or --undo, any library caller): refused while the image has an undo
//     disk or children. The check runs after the top's exclusive lock is
//     taken, and making a child takes a shared lock on its parent, so no
//     vhdkit process can add a child while the writer holds the image.
//   - Merge into a target (vhd merge, vhd undo commit): refused while the
//     target has an undo disk other than the one merged; children of the
//     target are refused unless MergeOptions.Force.
//   - Resize: refused while the image has an undo disk; children unless
//     ResizeOptions.Force (they stop opening: their size no longer fits).
//   - Reset-id (a new UUID): refused while the image has an undo disk;
//     children whose link leads to it unless ResetIDOptions.Force (they
//     name it by UUID, so they stop opening until re-linked).
//   - Replacing an image (vhd convert --force onto it): RefuseReplace.
//   - Rebase writes the child through Open for writing: refused as above.
//   - Compact keeps the view (same data, UUID, timestamp and parent link),
//     set-parent only rewrites where the parent is found (the child keeps
//     its UUID and timestamp, and the new parent must pass the same UUID,
//     size and timestamp checks unless the user overrides them), and
//     repair puts back what the last flush made durable: these three are
//     allowed on images others depend on.
//
// There is no override for an undo disk: its changes are the user's
// pending writes, and the way out is to decide about them (vhd undo
// commit or discard), never to write under them.

// refuseDependents refuses to change the image at path (UUID id), as r
// describes, when its undo disk exists or, unless force, other
// differencing images found by Dependents depend on it (their link
// leads to it, or cannot be followed).
// exclude lists images that go away with the operation (a merge's own
// layers).
func refuseDependents(path string, id engine.UUID, allowed, exclude []string, force bool, r refusal) error {
	if err := refuseUndoDisk(path, id, exclude, r); err != nil {
		return err
	}
	if force {
		return nil
	}
	deps, err := Dependents(id, path, append([]string{path}, exclude...), allowed)
	if err != nil {
		return fmt.Errorf("%s: looking for images that depend on it: %w", path, err)
	}
	if len(deps) > 0 {
		return fmt.Errorf("%s: %w: %s; %s: %s%s", path, ErrHasChildren, joinDependents(deps), r.childrenWhy, r.childrenInstead, onlyChildHint(deps, r))
	}
	return nil
}

// RefuseReplace is the check for callers that replace the image at path
// with another file (vhd convert --force onto it): an error if it has an
// undo disk or other differencing images depend on it (found as
// Dependents does, with the allowed parent folders). A file that is not
// a VHD has no dependents.
func RefuseReplace(path string, allowed []string) error {
	if st, err := os.Stat(path); err != nil || !st.Mode().IsRegular() {
		return nil // nothing to replace, or nothing that is replaced
	}
	img, err := engine.Open(path, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		return nil
	}
	id := img.Footer().UUID
	img.Close()
	return refuseDependents(path, id, allowed, nil, false, forReplacing)
}

// refusal says, in a refusal, what the operation would do to the undo
// disk's changes or to the children, and what to do instead.
type refusal struct {
	undoWhy, undoInstead         string
	childrenWhy, childrenInstead string
}

var (
	forWriting = refusal{
		"writing it would make them wrong", ", or write through the undo disk ('vhd mount' does by default, 'vhd serve --undo')",
		"writing it would change the disk they show (a parent written after its children were made invalidates them)", "write to a new child instead ('vhd snapshot'), or merge or delete them first",
	}
	forResizing = refusal{
		"resizing it would make them wrong", "",
		"resizing it would make them stop opening (their size no longer fits)", "merge or delete them first",
	}
	forReplacing = refusal{
		"replacing it would make them wrong", "",
		"replacing it would leave them without their parent", "write to another name, or merge or delete them first",
	}
	forMerge    = refusal{undoWhy: "merging into it would make them wrong"}
	forSnapshot = refusal{undoWhy: "a snapshot would leave them out, and they could not be committed after it"}
)

// refuseUndoDisk refuses when the image at path (UUID id) has an undo
// disk: UndoPath(path) recording id as its parent. A file there that
// cannot be read is refused too (it may be one, damaged); one that
// records another parent is not this image's (disk.vhd and disk.avhd
// share the name) and is left alone.
func refuseUndoDisk(path string, id engine.UUID, exclude []string, r refusal) error {
	vud := UndoPath(path)
	if sameFile(vud, path) || containsFile(exclude, vud) {
		return nil
	}
	st, err := os.Stat(vud)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	if err != nil {
		return fmt.Errorf("%s: %s may be its undo disk (%w) but cannot be read: %v; move it away if it is not one", path, vud, ErrHasUndoDisk, err)
	}
	u, err := engine.Open(vud, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		return fmt.Errorf("%s: %s may be its undo disk (%w) but cannot be read: %v; see 'vhd check %s', and move it away if it is not one", path, vud, ErrHasUndoDisk, err, vud)
	}
	h := u.Header()
	mine := u.Type() == engine.TypeDifferencing && h != nil && h.ParentUUID == id
	u.Close()
	if !mine {
		return nil
	}
	if err := engine.CheckLock(vud, false); err != nil {
		// Mounted or served through its undo disk right now: say by whom.
		return fmt.Errorf("%s: %w, %s, in use right now (%w); when that ends, keep its changes with 'vhd undo commit %s' or drop them with 'vhd undo discard %s'", path, ErrHasUndoDisk, vud, err, shq.Quote(path), shq.Quote(path))
	}
	return fmt.Errorf("%s: %w, %s, holding changes made over it as it is now: %s; keep them with 'vhd undo commit %s' or drop them with 'vhd undo discard %s' first%s", path, ErrHasUndoDisk, vud, r.undoWhy, shq.Quote(path), shq.Quote(path), r.undoInstead)
}

// sameFile reports whether a and b name the same existing file.
func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return absPath(a) == absPath(b)
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

func containsFile(list []string, p string) bool {
	for _, q := range list {
		if sameFile(q, p) {
			return true
		}
	}
	return false
}

// onlyChildHint, for a refused write to an image with one child, says to
// open the child: after a snapshot (or a backup, whose point is frozen
// under a new top) the newest writes are there, and a user who opens
// the image by its old name means to go on where they left off.
func onlyChildHint(deps []Dependent, r refusal) string {
	if len(deps) != 1 || r != forWriting || deps[0].Unresolved != "" {
		return ""
	}
	return fmt.Sprintf("; the newest writes are in %s: open that to go on where they left off", deps[0].Path)
}
