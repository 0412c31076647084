package guestagent

import (
	"errors"
	"fmt"
)

// Errors callers test for. A command the agent refused is an *Error.
var (
	// ErrProtocol: the agent sent something that is not a reply this
	// client understands (the stream is resynchronised before the next
	// command).
	ErrProtocol = errors.New("guest agent: protocol error")
	// ErrTooLong: a line longer than MaxLineBytes.
	ErrTooLong = errors.New("guest agent: reply longer than the limit")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("guest agent: the connection is closed")
)

// Error is a command's failure as the agent reports it.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

// Error is the agent's text and class; call() says which command.
func (e *Error) Error() string { return fmt.Sprintf("the agent refused: %s (%s)", e.Desc, e.Class) }
