// Command vhd is the one program users run to work with VHD images:
// info, create, check, repair, convert, and more as the library grows.
// It is thin: each subcommand lives in its own file, parses its flags
// and calls the engine.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"vhdkit/chains"
)

// commands is every subcommand, in the order `vhd help` lists them. A new
// subcommand is a new file with a *command and a line here. (Set in init:
// help refers to the table.)
var commands []*command

func init() {
	commands = []*command{
		infoCmd,
		createCmd,
		checkCmd,
		repairCmd,
		convertCmd,
		snapshotCmd,
		mergeCmd,
		setParentCmd,
		rebaseCmd,
		treeCmd,
		undoCmd,
		mountCmd,
		umountCmd,
		compareCmd,
		mapCmd,
		measureCmd,
		compactCmd,
		resizeCmd,
		resetIDCmd,
		serveCmd,
		ctlCmd,
		backupCmd,
		runCmd,
		fuzzCmd,
		versionCmd,
		completionCmd,
		manCmd,
		helpCmd,
	}
}

func main() {
	// SIGINT and SIGTERM cancel ctx, so a long operation stops cleanly
	// (convert removes its temporary file) instead of dying mid-write.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, newEnv(), os.Args[1:])
	stop()
	os.Exit(code)
}

// run dispatches args to a subcommand and returns the exit status.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		printUsage(e.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "--help":
		name, args = "help", args[:1]
	case "-V", "--version":
		name = "version"
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(e.stderr, "vhd: %s\n", notACommand(name))
		return exitUsage
	}
	fs := newFlagSet(cmd)
	help := fs.BoolP("help", "h", false, "show this help and exit")
	runCmd, forceProgress := setupFlags(cmd, fs)
	args, quiet, err := qemuSpellings(cmd, fs, args[1:])
	if err != nil {
		return report(ctx, e, cmd, err)
	}
	if quiet {
		e.stdout = io.Discard
	}
	if err := fs.Parse(args); err != nil {
		return report(ctx, e, cmd, usageErr("%s", flagErrorText(cmd, fs, err)))
	}
	if *help {
		printCommandHelp(e.stdout, cmd)
		return exitOK
	}
	e.forceProgress = *forceProgress
	return report(ctx, e, cmd, runCmd(ctx, e, fs.Args()))
}

func newFlagSet(cmd *command) *pflag.FlagSet {
	fs := pflag.NewFlagSet("vhd "+cmd.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	return fs
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// plainMessage is err's message without the system call Go names
// ("stat FILE: no such file" reads "FILE: no such file") and without the
// engine's package prefix ("FILE: vhd: footer ..." reads "FILE: footer
// ..."): the line already starts "vhd COMMAND: ".
func plainMessage(err error) string {
	msg := strings.ReplaceAll(strings.TrimPrefix(err.Error(), "vhd: "), ": vhd: ", ": ")
	var pe *fs.PathError
	if errors.As(err, &pe) {
		switch pe.Op {
		case "stat", "lstat", "open", "openat":
			msg = strings.Replace(msg, pe.Op+" "+pe.Path+": ", pe.Path+": ", 1)
		}
	}
	return msg
}

// userText is err as the user reads it: the message, and on a second
// line what to do about it when the message does not say.
func userText(cmdName string, err error) string {
	text := plainMessage(err)
	if h := hint(cmdName, err); h != "" {
		text += "\n  " + h
	}
	return text
}

// report prints err the way a user needs it and returns the exit status.
func report(ctx context.Context, e *env, cmd *command, err error) int {
	var ue *usageError
	var st exitStatus
	var ke *keptError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &st):
		return int(st)
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "vhd %s: %s\nUsage: vhd %s %s\nRun 'vhd help %s' for the flags.\n", cmd.name, ue.msg, cmd.name, cmd.args, cmd.name)
		return exitUsage
	case ctx.Err() != nil && errors.As(err, &ke):
		fmt.Fprintf(e.stderr, "vhd %s: interrupted; %s\n", cmd.name, ke.kept)
		return exitFailed
	case ctx.Err() != nil && errors.Is(err, context.Canceled) && !errors.Is(err, chains.ErrMergeInterrupted):
		// (A merge stopped half-way says so itself, below.)
		fmt.Fprintf(e.stderr, "vhd %s: interrupted; nothing was left half-done\n", cmd.name)
		return exitFailed
	}
	fmt.Fprintf(e.stderr, "vhd %s: %s\n", cmd.name, userText(cmd.name, err))
	return exitFailed
}
