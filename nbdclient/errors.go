package nbdclient

import (
	"errors"
	"fmt"
)

// ErrProtocol marks a server that broke the protocol: a bad magic, a
// reply to no request, a chunk outside its request, a length over a
// limit. The connection is closed; errors.Is tells it from I/O failures
// and from errors the server reported (*ServerError).
var ErrProtocol = errors.New("nbd: the server broke the protocol")

// ErrClosed is returned by calls on a connection that was closed.
var ErrClosed = errors.New("nbd: connection closed")

// ErrStalled: the server answered nothing for the stall timeout while
// requests were waiting.
var ErrStalled = errors.New("nbd: the server stopped answering")

// ServerError is an error the server replied to one request with; the
// connection carries on.
type ServerError struct {
	Errno   uint32
	Message string
}

func (e *ServerError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("nbd server: %s (%s)", e.Message, errnoName(e.Errno))
	}
	return "nbd server: " + errnoName(e.Errno)
}

// errnoName names the NBD error values (NBD_EPERM...).
func errnoName(errno uint32) string {
	switch errno {
	case 1:
		return "EPERM"
	case 5:
		return "EIO"
	case 12:
		return "ENOMEM"
	case 22:
		return "EINVAL"
	case 28:
		return "ENOSPC"
	case 75:
		return "EOVERFLOW"
	case 95:
		return "ENOTSUP"
	case 108:
		return "ESHUTDOWN"
	}
	return fmt.Sprintf("error %d", errno)
}

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}
