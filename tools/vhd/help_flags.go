package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// Flags in help: the command's own first, in the order it declares them;
// then the parent-finding flags every chain command shares, once, as a
// group; --help last. Values are named for what they are (SIZE, DIR,
// DURATION), never by their Go type (stringArray).

// chainGroup marks the flags addChainFlags declares.
const chainGroup = "parents"

// valueNames names the values of flags whose type says too little.
var valueNames = map[string]string{
	"accel": "MODE", "append": "ARGS", "console": "FILE", "control": "PATH", "description": "TEXT",
	"disk": "IMAGE[:ro]", "from": "FORMAT", "fuse": "DIR", "initrd": "FILE", "into": "ANCESTOR",
	"kernel": "FILE", "layer": "FILE", "listen": "HOST:PORT", "memory": "SIZE", "name": "NAME",
	"parent": "PARENT", "parent-dir": "DIR", "pid-file": "FILE", "qemu-arg": "ARG", "restore": "DIR",
	"socket": "PATH", "tls-ca": "FILE", "tls-cert": "FILE", "tls-key": "FILE", "tls-server-name": "NAME", "to": "FORMAT",
	"type": "TYPE", "undo": "POLICY", "view-of": "EXPORT",
}

// flagValueName is what help, the completions and the man page call a
// flag's value; "" for a flag that takes none.
func flagValueName(f *pflag.Flag) string {
	if f.NoOptDefVal != "" {
		return ""
	}
	if n, ok := valueNames[f.Name]; ok {
		return n
	}
	switch t := f.Value.Type(); t {
	case "duration":
		return "DURATION"
	case "int", "int64", "uint", "uint32", "uint64":
		return "N"
	case "float64":
		return "NUMBER"
	case "string", "stringArray", "stringSlice":
		return strings.ToUpper(f.Name[strings.LastIndexByte(f.Name, '-')+1:])
	default:
		if strings.ToUpper(t) == t {
			return t // SIZE, MASK: the flag's own Value says
		}
		return "VALUE"
	}
}

// isChainFlag reports whether f is one of addChainFlags'.
func isChainFlag(f *pflag.Flag) bool {
	_, ok := f.Annotations[chainGroup]
	return ok
}

// writeFlags prints fs's visible flags in help's groups.
func writeFlags(w io.Writer, fs *pflag.FlagSet) {
	var own, chain []*pflag.Flag
	var help *pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		switch {
		case f.Hidden:
		case f.Name == "help":
			help = f
		case isChainFlag(f):
			chain = append(chain, f)
		default:
			own = append(own, f)
		}
	})
	width := 0
	for _, f := range append(append(own, chain...), help) {
		if f != nil {
			width = max(width, len(flagLeft(f)))
		}
	}
	fmt.Fprint(w, "\nFlags:\n")
	for _, f := range own {
		writeFlagLine(w, f, width)
	}
	if len(chain) > 0 {
		fmt.Fprint(w, "\nFinding the parents of differencing images:\n")
		for _, f := range chain {
			writeFlagLine(w, f, width)
		}
	}
	if help != nil {
		fmt.Fprintln(w)
		writeFlagLine(w, help, width)
	}
}

// flagLeft is the left column: "-s, --size SIZE" or "    --json".
func flagLeft(f *pflag.Flag) string {
	s := "    --" + f.Name
	if f.Shorthand != "" {
		s = "-" + f.Shorthand + ", --" + f.Name
	}
	if v := flagValueName(f); v != "" {
		s += " " + v
	}
	return s
}

func writeFlagLine(w io.Writer, f *pflag.Flag, width int) {
	usage := f.Usage
	if d := flagDefault(f); d != "" && !strings.Contains(usage, "default") {
		usage += " (default " + d + ")"
	}
	fmt.Fprintf(w, "  %-*s   %s\n", width, flagLeft(f), usage)
}

// flagDefault is a default worth showing: not a zero value, not a bool.
func flagDefault(f *pflag.Flag) string {
	if f.NoOptDefVal != "" {
		return ""
	}
	switch d := f.DefValue; d {
	case "", "0", "0s", "[]", "false":
		return ""
	default:
		return d
	}
}
