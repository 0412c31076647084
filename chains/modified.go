package chains

import (
	"fmt"
	"path/filepath"
	"strings"

	"vhdkit/engine"
	"vhdkit/internal/shq"
)

// A parent whose footer timestamp no longer matches the one its child
// recorded was written after the child was made (vhdkit stamps an image
// the first time a flush writes data to it). The child's changes were
// made over data that may no longer be there, so reading the chain may
// give a mix of old and new sectors. What to say depends on the child:
//
//   - an undo disk holds pending writes over its image: nothing can make
//     them right again, and the truthful choice is to drop them;
//   - another child may still be right if only the parent's metadata
//     changed (a tool that restamps footers): the user may accept the
//     parent, knowing that is what it means.

// modifiedParentError explains a timestamp mismatch between child and
// parent, naming the values compared (the parent's footer time, and its
// file time, which Xen's tools record), with the choices that are true
// for that child.
func modifiedParentError(childPath string, child metadata, parentPath string, parent metadata) error {
	const layout = "2006-01-02 15:04:05 UTC"
	when := fmt.Sprintf("it recorded parent time %s; %s", engine.VHDTime(child.Header().ParentTimestamp).Format(layout), parentPath)
	if ts := parent.Footer().Timestamp; ts != 0 { // a raw parent has no footer
		when += fmt.Sprintf("'s footer says %s and its", engine.VHDTime(ts).Format(layout))
	} else {
		when += "'s"
	}
	if mtime, ok := fileTime(parentPath); ok {
		when += fmt.Sprintf(" file was modified %s", engine.VHDTime(mtime).Format(layout))
	} else {
		when += " file time cannot be read"
	}
	if isUndoDiskOf(childPath, parentPath) {
		return fmt.Errorf("%s: %w: %s; it is the undo disk of %s, and its changes were made over data that has since been written, so they can no longer be used: drop them with 'vhd undo discard %s'", childPath, ErrParentModified, when, parentPath, shq.Quote(parentPath))
	}
	return fmt.Errorf("%s: %w: %s; its changes may now sit over different data: restore the parent from a backup, or, only if you know the parent's data did not change (a tool rewrote its footer or touched its file), re-link the child with 'vhd set-parent --accept-modified-parent %s %s', which records the parent's time now", childPath, ErrParentModified, when, shq.Quote(childPath), shq.Quote(parentPath))
}

// isUndoDiskOf reports whether child is parent's undo disk by name (an
// undo disk is named after its image, with .vud).
func isUndoDiskOf(child, parent string) bool {
	if !strings.EqualFold(filepath.Ext(child), ".vud") {
		return false
	}
	return sameFile(child, UndoPath(parent)) || filepath.Base(child) == filepath.Base(UndoPath(parent))
}

// writtenAfter says, when parent (at parentPath, with the UUID child
// records) fails the time check Open makes (linkTimeMatches), that it
// was written after child was made, with both times; "" when it passes.
// Advice that offers parent to re-link to says it, so a plain set-parent
// is never offered for a modified parent.
func writtenAfter(childPath string, child metadata, parentPath string, parent metadata) string {
	if linkTimeMatches(childPath, child, parent, parentPath) {
		return ""
	}
	const layout = "2006-01-02 15:04:05 UTC"
	pt := parent.Footer().Timestamp
	if mtime, ok := fileTime(parentPath); ok && pt == 0 { // a raw parent: its file time
		pt = mtime
	}
	return fmt.Sprintf("was written after the child was made (parent time %s, the child recorded %s): its data may differ from what the child was made over",
		engine.VHDTime(pt).Format(layout), engine.VHDTime(child.Header().ParentTimestamp).Format(layout))
}
