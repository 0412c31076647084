package chains

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"vhdkit/engine"
)

// relinked is a child of a merged child, open and locked until it is
// moved onto the merge target.
type relinked struct {
	path string
	img  *engine.Image
}

// relinkAll links each child to the target as it now stands (UUID and
// the timestamp its last flush stamped). Each SetParentLink is atomic and
// synced before it returns (engine/relocate.go), and writing the same
// link twice gives the same image, so a resumed merge simply does them
// all again.
func relinkAll(kids []relinked, target string, ft engine.Footer) error {
	for _, k := range kids {
		locs, err := Locators(k.path, target)
		if err != nil {
			return err
		}
		p := engine.ParentInfo{UUID: ft.UUID, Timestamp: ft.Timestamp, Name: filepath.Base(target), Locators: locs}
		if err := k.img.SetParentLink(p); err != nil {
			return err
		}
	}
	return nil
}

func closeAll(kids []relinked) {
	for _, k := range kids {
		k.img.Close()
	}
}

// openWritable opens an image for writing even when its write permission
// was taken (a snapshot freezes an image that gets children, and a merge
// writes such images: its target, the children it moves): the permission
// is given back for the open and taken again at once; the open file stays
// writable. Only the owner (or root) gets that far.
func openWritable(path string, opts engine.Options) (*engine.Image, error) {
	opts.ReadOnly = false
	img, err := engine.Open(path, opts)
	if !errors.Is(err, fs.ErrPermission) {
		return img, err
	}
	st, serr := os.Stat(path)
	if serr != nil || st.Mode().Perm()&0o200 != 0 {
		return nil, err
	}
	if cerr := os.Chmod(path, st.Mode().Perm()|0o200); cerr != nil {
		return nil, err
	}
	defer os.Chmod(path, st.Mode().Perm())
	return engine.Open(path, opts)
}
