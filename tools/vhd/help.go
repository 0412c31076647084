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
	width := 0
	for _, c := range commands {
		width = max(width, len(c.name))
	}
	for _, c := range commands {
		lines := wrapWords(c.summary, usageColumns-width-4)
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "  %*s  %s\n", width, "", l)
		}
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

// usageColumns is the width the command list is wrapped to.
const usageColumns = 80

// wrapWords breaks s into lines of at most width characters, at spaces
// (a longer word gets a line of its own).
func wrapWords(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}
