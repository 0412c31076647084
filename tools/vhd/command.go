package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"vhdkit/engine"
	"vhdkit/service"
)

// Exit statuses, the interface scripts rely on.
const (
	exitOK       = 0
	exitFailed   = 1 // the command failed
	exitUsage    = 2 // bad command line
	exitProblems = 3 // vhd check found problems
)

// command is one subcommand.
type command struct {
	name    string
	args    string // what follows the name in a usage line
	summary string // one line for `vhd help`
	doc     string // paragraphs for `vhd help NAME`
	// setup declares the command's flags on fs and returns the function
	// that runs it once they are parsed.
	setup func(fs *pflag.FlagSet) runFunc
	// otherFlags answers other tools' flags for what this command does
	// (see flagsuggest.go).
	otherFlags map[string]string
}

// runFunc runs a command on its positional arguments.
type runFunc func(ctx context.Context, e *env, args []string) error

// env is where a command's output goes.
type env struct {
	stdout, stderr io.Writer
	// stderrTerm is set when stderr is a terminal (progress bars).
	stderrTerm bool
	// forceProgress is --progress: progress as lines in a log when
	// stderr is not a terminal.
	forceProgress bool
	stderrFd      int
}

func newEnv() *env {
	fd := int(os.Stderr.Fd())
	return &env{stdout: os.Stdout, stderr: os.Stderr, stderrTerm: isTerminal(fd), stderrFd: fd}
}

// isTerminal reports whether fd is a terminal.
func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErr(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// keptError is an interruption (Ctrl-C) after which the command kept
// its work on purpose, to be resumed: kept says what is where and how
// to resume, instead of "nothing was left half-done".
type keptError struct {
	err  error
	kept string
}

func (e *keptError) Error() string { return e.err.Error() }
func (e *keptError) Unwrap() error { return e.err }

// keptOnInterrupt wraps err, when it is an interruption, with what the
// command kept.
func keptOnInterrupt(err error, format string, args ...any) error {
	if !errors.Is(err, context.Canceled) {
		return err
	}
	return &keptError{err: err, kept: fmt.Sprintf(format, args...)}
}

// exitStatus ends the command with a status, the output already printed.
type exitStatus int

func (s exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(s)) }

// wantArgs checks the number of positional arguments.
func wantArgs(args []string, names ...string) error {
	if len(args) < len(names) {
		return usageErr("missing %s", strings.Join(names[len(args):], " and "))
	}
	if len(args) > len(names) {
		return usageErr("unexpected argument %q", args[len(names)])
	}
	return nil
}

// advised is an error whose message says what to do: hint adds nothing.
type advised struct{ error }

func (a advised) Unwrap() error { return a.error }

// hint says what to do about err, when its message does not already.
func hint(cmdName string, err error) string {
	var le *engine.LockedError
	var de *service.DialError
	var fe *engine.FolderError
	var ce *engine.CorruptError
	switch {
	case errors.As(err, &advised{}):
		return ""
	case errors.As(err, &fe):
		return "" // the message names the folder and says what to do
	case errors.As(err, &le):
		return service.HolderHint(le)
	case errors.As(err, &de), errors.Is(err, engine.ErrNoFooter):
		return "" // the message says what to do
	case errors.Is(err, engine.ErrLocked), errors.Is(err, engine.ErrDestinationExists):
		return "" // the message says what to do
	case errors.Is(err, fs.ErrNotExist):
		return "check the path, and that the file is there"
	case errors.Is(err, fs.ErrExist):
		return "choose another name, or remove the file first"
	case errors.Is(err, fs.ErrPermission), errors.Is(err, unix.EROFS):
		return "check the permissions of the file and its folder (or run as a user who may write there)"
	case errors.Is(err, unix.ENOSPC):
		return "free some space on the destination's file system, or write elsewhere"
	case errors.As(err, &ce) && (ce.Code == engine.CodeBATOutOfRange || ce.Code == engine.CodeBATOverlap) && cmdName != "repair":
		return "blocks the table puts past the end of the file or over each other cannot be repaired: 'vhd convert --salvage IMAGE COPY' copies what can still be read, and lists what cannot ('vhd check IMAGE' lists the damage)"
	case errors.Is(err, engine.ErrCorrupt) && cmdName == "repair":
		return "the damage needs more than a safe repair: copy what can still be read with 'vhd convert --salvage', or restore the image from a backup"
	case errors.Is(err, engine.ErrCorrupt):
		return "the image is damaged: 'vhd check IMAGE' lists the problems and 'vhd repair IMAGE' fixes those it can safely"
	case errors.Is(err, engine.ErrUnsupportedImage):
		return ""
	}
	return ""
}
