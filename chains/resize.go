package chains

import (
	"fmt"

	"vhdkit/engine"
)

// ResizeOptions control Resize.
type ResizeOptions struct {
	// Shrink allows a smaller size (only if the cut-off part is empty).
	Shrink bool
	// Force resizes although children depend on the image (their size
	// no longer matches, so they stop opening).
	Force bool
	Open  Options
	// Prepare, if set, runs on the image open for writing once the
	// checks have passed, before the resize; an error stops it. vhd
	// resize --to-minimum moves a GPT's backup table in it.
	Prepare func(img *engine.Image) error
}

// Resize changes the size of a fixed or dynamic image (see
// engine.Image.Resize for how each is kept crash-safe). Differencing
// images take their parent's size; an image with an undo disk is
// refused, one other images depend on unless forced.
func Resize(path string, size int64, opts ResizeOptions) error {
	img, err := engine.Open(path, engine.Options{Logger: opts.Open.Logger})
	if err != nil {
		return err
	}
	defer img.Close()
	if img.Type() == engine.TypeDifferencing {
		return fmt.Errorf("%s is a differencing image: it has its parent's size; resize the base image and make a new child", path)
	}
	if err := refuseDependents(path, img.Footer().UUID, opts.Open.ParentDirs, nil, opts.Force, forResizing); err != nil {
		return err
	}
	if opts.Prepare != nil {
		if err := opts.Prepare(img); err != nil {
			return err
		}
	}
	return img.Resize(size, opts.Shrink)
}
