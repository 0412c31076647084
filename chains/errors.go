package chains

import (
	"context"
	"errors"
	"fmt"

	"vhdkit/internal/shq"
)

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
	// ErrMergeInterrupted: a merge out of or into this image (or a
	// layer below it) did not finish; running it again finishes it.
	ErrMergeInterrupted = errors.New("merge interrupted")
)

// MergeStoppedError is returned by a merge that stopped (interrupted,
// failed, power lost) after its journal was written: the target is
// half-written and the chain refuses to open until the merge is run
// again. It matches ErrMergeInterrupted and the cause (errors.Is).
type MergeStoppedError struct {
	Child, Target string
	Err           error // what stopped it
}

func (e *MergeStoppedError) Error() string {
	why := ""
	if !errors.Is(e.Err, context.Canceled) {
		why = " (" + e.Err.Error() + ")"
	}
	return fmt.Sprintf("%s%s: %s is half merged into %s; %s still reads as before, but its chain opens only once the merge is done: run `vhd merge %s` again to finish",
		ErrMergeInterrupted, why, e.Child, e.Target, e.Child, shq.Quote(e.Child))
}

func (e *MergeStoppedError) Unwrap() []error { return []error{ErrMergeInterrupted, e.Err} }

// refusedError is a refusal that says all in its own words and matches
// the sentinel kind (errors.Is) without repeating its text.
type refusedError struct {
	msg  string
	kind error
}

func (e *refusedError) Error() string { return e.msg }
func (e *refusedError) Unwrap() error { return e.kind }
