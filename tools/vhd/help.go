package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

var helpCmd = &command{
	name:    "help",
	args:    "[COMMAND]",
	summary: "list the commands, or show one command's flags",
	doc:     "With no argument, lists every command. With one, shows what it does and its flags (the same as 'vhd COMMAND --help').",
	setup: func(fs *pflag.FlagSet) runFunc {
		return func(ctx context.Context, e *env, args []string) error {
			switch len(args) {
			case 0:
				printUsage(e.stdout)
				return nil
			case 1:
				cmd := lookup(args[0])
				if cmd == nil {
					return usageErr("%s", notACommand(args[0]))
				}
				printCommandHelp(e.stdout, cmd)
				return nil
			}
			return usageErr("unexpected argument %q", args[1])
		}
	},
}

// printUsage lists the commands.
func printUsage(w io.Writer) {
	fmt.Fprintf(w, "vhd works with Microsoft VHD disk images (fixed, dynamic, differencing).\n\n")
	fmt.Fprintf(w, "Usage: vhd COMMAND [flags] [arguments]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\n%s\n\n%s\n\n%s\n\nRun 'vhd help COMMAND' or 'vhd COMMAND --help' for a command's flags.\n", sizeHelp, qemuHelp, exitHelp)
}

const exitHelp = `Exit status: 0 success, 1 the command failed, 2 bad command line,
3 'vhd check' found problems.`

// printCommandHelp shows a command's usage, what it does and its flags.
func printCommandHelp(w io.Writer, cmd *command) {
	fmt.Fprintf(w, "Usage: vhd %s %s\n\n%s.\n", cmd.name, cmd.args, capitalize(cmd.summary))
	if cmd.doc != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.doc))
	}
	fs := newFlagSet(cmd)
	fs.BoolP("help", "h", false, "show this help and exit")
	setupFlags(cmd, fs)
	writeFlags(w, fs)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
