package main

import (
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// The shell completions and the manual page are made from the command
// table and each command's flag set, the same definitions 'vhd help'
// prints, so none of them can drift from the command line.

// cliCommand is what the generators know of one command.
type cliCommand struct {
	cmd   *command
	verbs []string // words its first argument takes (undo: status, commit, discard)
	flags []cliFlag
}

// cliFlag is one visible flag.
type cliFlag struct {
	long, short string
	usage       string
	valueName   string // SIZE, PATH... for a flag that takes a value
}

func (f cliFlag) takesValue() bool { return f.valueName != "" }

// verbList finds a first argument made of fixed words, "a|b|c", at the
// start of a usage line.
var verbList = regexp.MustCompile(`^([a-z][a-z-]*(?:\|[a-z][a-z-]*)+)(?:\s|$)`)

func cliModel() []cliCommand {
	var out []cliCommand
	for _, c := range commands {
		m := cliCommand{cmd: c, flags: visibleFlags(c)}
		if v := verbList.FindStringSubmatch(c.args); v != nil {
			m.verbs = strings.Split(v[1], "|")
		}
		if c == helpCmd {
			for _, o := range commands {
				m.verbs = append(m.verbs, o.name)
			}
		}
		out = append(out, m)
	}
	return out
}

// visibleFlags declares c's flags on a fresh set and lists those help
// shows, sorted by name as help prints them.
func visibleFlags(c *command) []cliFlag {
	fs := newFlagSet(c)
	fs.BoolP("help", "h", false, "show this help and exit")
	setupFlags(c, fs)
	var flags []cliFlag
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		flags = append(flags, cliFlag{long: f.Name, short: f.Shorthand, usage: f.Usage, valueName: flagValueName(f)})
	})
	sort.Slice(flags, func(i, j int) bool { return flags[i].long < flags[j].long })
	return flags
}
