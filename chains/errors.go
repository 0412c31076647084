package chains

import "errors"

// Errors callers test for (with errors.Is).
var (
	// ErrParentNotFound: no locator or name led to the parent.
	ErrParentNotFound = errors.New("parent not found")
	// ErrOutsideAllowed: a locator leads outside the allowed folders.
	ErrOutsideAllowed = errors.New("parent locator leads outside the allowed folders")
	// ErrNotRegular: a locator names a device, FIFO, socket or folder.
	ErrNotRegular = errors.New("parent is not a regular file")
	// ErrParentModified: the parent changed after the child was made.
	ErrParentModified = errors.New("parent was modified after the child was made")
	// ErrParentMismatch: the parent's size or UUID does not fit the child.
	ErrParentMismatch = errors.New("parent does not match the child")
	// ErrCycle: a chain leads back to one of its own layers.
	ErrCycle = errors.New("differencing chain has a cycle")
	// ErrTooDeep: a chain is deeper than Options.MaxDepth.
	ErrTooDeep = errors.New("differencing chain is too deep")
	// ErrHasChildren: other images depend on the one an operation would
	// change.
	ErrHasChildren = errors.New("other differencing images depend on this image")
	// ErrHasUndoDisk: the image has an undo disk, whose changes writing
	// the image would make wrong.
	ErrHasUndoDisk = errors.New("image has an undo disk")
	// ErrMergeInterrupted: a merge out of this image did not finish.
	ErrMergeInterrupted = errors.New("a merge out of this image was interrupted")
)
