package service

import "errors"

// Errors callers test for (with errors.Is).
var (
	// ErrExportExists: an export of that name is served (or being added
	// or removed) already.
	ErrExportExists = errors.New("an export of that name exists already")
	// ErrNoExport: no export of that name is served.
	ErrNoExport = errors.New("no such export")
	// ErrStopping: the host is stopping; nothing can be added or changed.
	ErrStopping = errors.New("the host is stopping")
)
