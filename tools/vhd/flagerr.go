package main

import (
	"regexp"
	"strings"

	"github.com/spf13/pflag"
)

// pflagInvalid is how pflag words a value its flag's Set refused:
// `invalid argument "10Q" for "-s, --size" flag: size "10Q": want ...`.
var pflagInvalid = regexp.MustCompile(`^invalid argument "(.*)" for "(?:-[^,]*, )?(--[^"]+)" flag: (.*)$`)

// flagErrorText rewords pflag's parse errors: an unknown flag is
// answered (unknownFlagText); a refused value reads
// `--size "10Q": want a number and a unit ...`, naming flag and value
// once (the Set methods name the value again), and a bad duration says
// what one looks like instead of Go's "time: unknown unit".
func flagErrorText(cmd *command, fs *pflag.FlagSet, err error) string {
	if s := unknownFlagText(cmd, fs, err); s != "" {
		return s
	}
	m := pflagInvalid.FindStringSubmatch(err.Error())
	if m == nil {
		return err.Error()
	}
	value, name, why := m[1], m[2], m[3]
	if f := fs.Lookup(strings.TrimPrefix(name, "--")); f != nil {
		switch t := f.Value.Type(); {
		case t == "duration":
			why = "want a duration such as 30s, 5m or 1h30m"
		case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
			why = "want a whole number"
		}
	}
	for _, echo := range []string{"size " + quote(value) + ": ", quote(value) + ": "} {
		why = strings.TrimPrefix(why, echo)
	}
	return name + " " + quote(value) + ": " + why
}

func quote(s string) string { return `"` + s + `"` }
