package nbdserve

import (
	"errors"
	"syscall"

	"vhdkit/engine"
)

// errnoFor maps a disk error to the NBD error a client gets. write is
// set for WRITE, WRITE_ZEROES and TRIM.
//
//	engine.ErrReadOnly, EROFS, EPERM, EACCES   -> EPERM
//	engine.ErrOutOfRange                       -> ENOSPC on writes, EINVAL otherwise
//	ENOSPC, EDQUOT, EFBIG (what the spec asks) -> ENOSPC
//	anything else (I/O, engine.ErrCorrupt)     -> EIO
func errnoFor(err error, write bool) uint32 {
	switch {
	case errors.Is(err, engine.ErrReadOnly), errors.Is(err, syscall.EROFS),
		errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return errPerm
	case errors.Is(err, engine.ErrOutOfRange):
		if write {
			return errNoSpc
		}
		return errInval
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errNoSpc
	}
	return errIO
}

// errnoText is the message sent with a structured error.
func errnoText(errno uint32) string {
	switch errno {
	case errPerm:
		return "operation not permitted (read-only export)"
	case errIO:
		return "input/output error (see the server log)"
	case errNoMem:
		return "out of memory"
	case errInval:
		return "invalid request (flags, range or length)"
	case errNoSpc:
		return "no space left (past the end of the export, or the host disk is full)"
	case errOverflow:
		return "value too large"
	case errNotSup:
		return "not supported fast; write the zeros instead"
	case errShutdown:
		return "server is shutting down"
	}
	return "error"
}
