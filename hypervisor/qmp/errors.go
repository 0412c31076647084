package qmp

import "errors"

// Errors callers test for. A command QEMU refused is an *Error.
var (
	// ErrProtocol: QEMU sent something that is not QMP (or not the QMP
	// this client speaks): the connection is closed.
	ErrProtocol = errors.New("qmp: protocol error")
	// ErrClosed: the connection ended (QEMU exited, or Close was
	// called) before the command's reply came.
	ErrClosed = errors.New("qmp: the connection to QEMU is closed")
	// ErrTooLong: one message was longer than MaxMessageBytes.
	ErrTooLong = errors.New("qmp: message longer than the limit")
)
