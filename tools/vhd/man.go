package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

var manCmd = &command{
	name:    "man",
	args:    "",
	summary: "print vhd's manual page (roff), made from the same text as 'vhd help'",
	doc: `Prints the manual page vhd(1): every command with what it does and its
flags, from the definitions 'vhd help' prints. To read it: vhd man |
man -l -  ; to install it: vhd man > /usr/local/share/man/man1/vhd.1`,
	setup: func(fs *pflag.FlagSet) runFunc {
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			writeManPage(e.stdout, cliModel())
			return nil
		}
	},
}

func writeManPage(w io.Writer, model []cliCommand) {
	fmt.Fprintf(w, ".TH VHD 1 \"\" \"vhdkit %s\" \"User Commands\"\n", roffEscape(buildVersion()))
	fmt.Fprint(w, ".SH NAME\nvhd \\- work with Microsoft VHD disk images (fixed, dynamic, differencing)\n")
	fmt.Fprint(w, ".SH SYNOPSIS\n.B vhd\n.I COMMAND\n[flags] [arguments]\n")
	fmt.Fprint(w, ".SH DESCRIPTION\n")
	roffText(w, "vhd inspects, checks, repairs, converts, chains, merges, mounts and serves VHD images; 'vhd help COMMAND' shows the text below for one command.\n\n"+sizeHelp)
	fmt.Fprint(w, ".SH COMMANDS\n")
	for _, c := range model {
		fmt.Fprintf(w, ".SS \"vhd %s %s\"\n", c.cmd.name, roffEscape(strings.ReplaceAll(c.cmd.args, `"`, `'`)))
		roffText(w, capitalize(c.cmd.summary)+".")
		if c.cmd.doc != "" {
			roffText(w, strings.TrimSpace(c.cmd.doc))
		}
		for _, f := range c.flags {
			fmt.Fprint(w, ".TP\n")
			name := `\fB\-\-` + roffEscape(f.long) + `\fR`
			if f.short != "" {
				name = `\fB\-` + roffEscape(f.short) + `\fR, ` + name
			}
			if f.takesValue() {
				name += ` \fI` + roffEscape(f.valueName) + `\fR`
			}
			fmt.Fprintln(w, name)
			fmt.Fprintln(w, roffLine(f.usage))
		}
	}
	fmt.Fprint(w, ".SH \"EXIT STATUS\"\n")
	roffText(w, exitHelp)
	fmt.Fprint(w, ".SH \"SEE ALSO\"\n.BR qemu-img (1),\n.BR qemu-nbd (8),\n.BR nbdinfo (1)\n")
}

// roffText writes paragraphs: those whose lines are indented (tables,
// examples) stay as they are (.nf), the others fill.
func roffText(w io.Writer, text string) {
	for _, para := range strings.Split(text, "\n\n") {
		if strings.TrimSpace(para) == "" {
			continue
		}
		fmt.Fprint(w, ".PP\n")
		if strings.HasPrefix(para, " ") || strings.Contains(para, "\n ") {
			fmt.Fprint(w, ".nf\n")
			for _, l := range strings.Split(para, "\n") {
				fmt.Fprintln(w, roffLine(l))
			}
			fmt.Fprint(w, ".fi\n")
			continue
		}
		for _, l := range strings.Split(para, "\n") {
			fmt.Fprintln(w, roffLine(strings.TrimSpace(l)))
		}
	}
}

// roffLine escapes one line of text, so that no character of it is read
// as a request or an escape.
func roffLine(s string) string {
	s = roffEscape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}
