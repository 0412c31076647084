package chains

import (
	"errors"

	"vhdkit/engine"
)

// LinkProblem opens the chain of the differencing image at path as Open
// does (read-only, without locks, so an image in use is checked too)
// and says as a check problem, a warning, why it does not open: Test-VHD
// fails a child whose parent is gone, and so does vhd check. nil when
// the chain opens, or path is not a differencing image.
func LinkProblem(path string, opts Options) *engine.Problem {
	opts.ReadOnly, opts.NoLock = true, true
	c, err := Open(path, opts)
	if err == nil {
		c.Close()
		return nil
	}
	code := engine.CodeParentUnresolved
	switch {
	case errors.Is(err, ErrMergeInterrupted):
		code = engine.CodeMergeUnfinished
	case errors.Is(err, ErrParentModified):
		code = engine.CodeParentModified
	case errors.Is(err, ErrParentMismatch):
		code = engine.CodeParentMismatch
	}
	return &engine.Problem{Code: code, Offset: -1, Message: brokenReason(path, err)}
}
