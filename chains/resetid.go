package chains

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"vhdkit/engine"
)

// ResetIDOptions control ResetID.
type ResetIDOptions struct {
	// UUID is the new identifier; the nil UUID asks for a random one.
	UUID engine.UUID
	// Force changes it although differencing images record the image as
	// their parent: they name it by UUID, so they stop opening until
	// each is re-linked (vhd set-parent --ignore-uuid CHILD IMAGE).
	Force bool
	// Open.ParentDirs are the folders searched for children, besides
	// the image's own.
	Open Options
}

// ResetIDResult is what ResetID did.
type ResetIDResult struct {
	Old, New engine.UUID
	// Children are the differencing images that recorded the old UUID
	// and link to this image (there are none unless Force): each must be
	// re-linked to open again.
	Children []string
}

// ResetID gives the image at path a new UUID (Hyper-V's Set-VHD
// -ResetDiskIdentifier, VirtualBox's sethduuid), so a copy can be used
// beside its original; see engine.Image.SetUUID for what is kept and
// how a crash leaves the old UUID or the new. Refused: an undo disk (its
// writes are pending over its image, for the user to keep or drop), an
// image with one (it would lose its image), a file without write
// permission, and an image children link to, unless Force.
func ResetID(path string, opts ResetIDOptions) (ResetIDResult, error) {
	if strings.EqualFold(filepath.Ext(path), ".vud") {
		return ResetIDResult{}, undoDiskIDError(path)
	}
	if err := refuseReadOnlyFile(path); err != nil {
		return ResetIDResult{}, err
	}
	img, err := engine.Open(path, engine.Options{Logger: opts.Open.Logger})
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return ResetIDResult{}, fmt.Errorf("%w; a new UUID is written into the image: give it to a writable copy", err)
	}
	if err != nil {
		return ResetIDResult{}, err
	}
	defer img.Close()
	r := ResetIDResult{Old: img.Footer().UUID, New: opts.UUID}
	if r.New.IsZero() {
		r.New = engine.NewUUID()
	}
	if r.New == r.Old {
		return r, nil // nothing changes, so nothing is cut off
	}
	if err := refuseUndoDisk(path, r.Old, nil, forResetID); err != nil {
		return ResetIDResult{}, err
	}
	if r.Children, err = linkedChildren(path, r.Old, opts.Open.ParentDirs); err != nil {
		return ResetIDResult{}, fmt.Errorf("%s: looking for images that depend on it: %w", path, err)
	}
	if len(r.Children) > 0 && !opts.Force {
		return ResetIDResult{}, fmt.Errorf("%s: %w: %s; they name it by its UUID and would stop opening", path, ErrHasChildren, strings.Join(r.Children, ", "))
	}
	if err := img.SetUUID(r.New); err != nil {
		return ResetIDResult{}, err
	}
	return r, img.Close()
}

var forResetID = refusal{undoWhy: "a new UUID would leave them without their image"}

// linkedChildren are the differencing images that depend on the image
// (Dependents: they record id as their parent's UUID and their link
// leads to this file, or nowhere: it may be this image's, moved). After a
// copy, the original's children record the copy's UUID too, but their
// links lead to the original, which keeps it.
func linkedChildren(path string, id engine.UUID, allowed []string) ([]string, error) {
	deps, err := Dependents(id, path, []string{path}, allowed)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(deps))
	for i, d := range deps {
		out[i] = d.Path
	}
	return out, nil
}

// refuseReadOnlyFile refuses an image file no one may write (root could,
// but the mode says it is not to change: vhd snapshot freezes a parent
// so).
func refuseReadOnlyFile(path string) error {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o222 != 0 {
		return nil // engine.Open says what is wrong, if anything
	}
	return fmt.Errorf("%s is read-only (mode %s; vhd snapshot freezes a parent so): give a copy the new UUID, or, if this file is meant to change, make it writable first (chmod u+w)", path, st.Mode().Perm())
}

// undoDiskIDError refuses to give the undo disk vud a new UUID: the
// writes it holds are pending over its image, for the user to keep or
// drop, and it is never what a copy needs changed.
func undoDiskIDError(vud string) error {
	image := "IMAGE"
	base := strings.TrimSuffix(vud, filepath.Ext(vud))
	for _, ext := range []string{".vhd", ".avhd", ".VHD", ".AVHD"} {
		if _, err := os.Stat(base + ext); err == nil {
			image = base + ext
			break
		}
	}
	return fmt.Errorf("%s is %w, holding writes pending over %s: keep them with 'vhd undo commit %s' or drop them with 'vhd undo discard %s', then give %s a new UUID",
		vud, errIsUndoDisk, image, image, image, image)
}

// errIsUndoDisk: the image an operation was given is an undo disk.
var errIsUndoDisk = errors.New("an undo disk")
