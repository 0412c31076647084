package main

import (
	"strings"

	"github.com/spf13/pflag"
)

// qemu-img's spellings of options a vhd command spells its own way. They
// are rewritten before the flags are parsed where the meaning is plain,
// and answered with the vhd spelling where it is not; a command that
// declares the flag itself (compare's -f, convert's -O) is left alone.
const qemuHelp = `qemu-img's spellings work where they mean one thing: -f vhd|vpc|raw
(a VHD is found by its footer anyway), -O vpc (a dynamic VHD), -o
subformat=fixed|dynamic and force_size=on (create, convert), -p (a
progress bar), -q (nothing on stdout, no progress), output=json (JSON,
where the command prints it), 'create FILE SIZE'. Others get the vhd
spelling (docs/CLI.md).`

// long is a long flag's spelling. (The rewriting names flags a command
// may not have; the flag walk, flagwalk_test.go, checks the flags that
// messages name, and these are not messages.)
func long(name string) string { return "--" + name }

// qemuArgs is the rewriting of one command line.
type qemuArgs struct {
	cmd   *command
	fs    *pflag.FlagSet
	out   []string
	quiet bool
	// late are flags put after all others, so that -o subformat=fixed
	// wins over -O vpc wherever each was given.
	late []string
}

// qemuSpellings rewrites args (a command's flags and arguments) and
// reports whether -q asked for quiet.
func qemuSpellings(cmd *command, fs *pflag.FlagSet, args []string) ([]string, bool, error) {
	q := &qemuArgs{cmd: cmd, fs: fs}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			q.out = append(q.out, args[i:]...)
			break
		}
		if q.qemuValueFlag(a) && i+1 < len(args) {
			q.out = append(q.out, a, args[i+1])
			i++
			continue
		}
		name, val, hasVal := splitFlag(a)
		if name == "" || q.qemuOwn(name) {
			q.out = append(q.out, a)
			continue
		}
		if !hasVal && takesValue(name) && i+1 < len(args) {
			i++
			val = args[i]
		}
		if err := q.qemuRewrite(name, val); err != nil {
			return nil, false, err
		}
	}
	return append(q.out, q.late...), q.quiet, nil
}

// splitFlag returns a qemu-style flag's name (-f, --output) and value
// (-fvpc, -f=vpc, --output=json), or "" for anything else.
func splitFlag(a string) (name, val string, hasVal bool) {
	switch {
	case strings.HasPrefix(a, long("output")):
		name, val, hasVal = strings.Cut(a, "=")
		if name != long("output") {
			return "", "", false
		}
		return name, val, hasVal
	case len(a) >= 2 && a[0] == '-' && a[1] != '-' && strings.ContainsRune("fOopq", rune(a[1])):
		name, val = a[:2], strings.TrimPrefix(a[2:], "=")
		return name, val, val != ""
	}
	return "", "", false
}

func takesValue(name string) bool { return name != "-p" && name != "-q" }

// own reports whether the command declares the flag itself.
func (q *qemuArgs) qemuOwn(name string) bool {
	if name == long("output") {
		return q.fs.Lookup("output") != nil
	}
	return q.fs.ShorthandLookup(name[1:]) != nil
}

// valueFlag reports whether a is one of the command's own flags whose
// value is the next argument (--qemu-arg -p): that value is not a flag.
func (q *qemuArgs) qemuValueFlag(a string) bool {
	var f *pflag.Flag
	switch {
	case strings.HasPrefix(a, "--") && !strings.Contains(a, "="):
		f = q.fs.Lookup(a[2:])
	case len(a) == 2 && a[0] == '-' && a[1] != '-':
		f = q.fs.ShorthandLookup(a[1:])
	}
	return f != nil && f.NoOptDefVal == ""
}

func (q *qemuArgs) qemuRewrite(name, val string) error {
	switch name {
	case long("output"):
		return q.qemuOutput(val)
	case "-q":
		q.quiet = true
		if q.fs.Lookup("no-progress") != nil {
			q.out = append(q.out, long("no-progress"))
		}
	case "-p":
		if q.fs.Lookup("progress") == nil {
			return usageErr("-p: vhd %s shows no progress bar", q.cmd.name)
		}
		q.out = append(q.out, long("progress"))
	case "-f":
		return q.qemuFormat(val)
	case "-O":
		return usageErr("-O %s: only convert and measure write or measure another format; vhd %s takes none", val, q.cmd.name)
	case "-o":
		return q.qemuOptions(val)
	}
	return nil
}

func (q *qemuArgs) qemuOutput(val string) error {
	switch {
	case val == "human":
	case val == "json" && q.fs.Lookup("json") != nil:
		q.out = append(q.out, long("json"))
	case val == "json":
		return usageErr("output=json: vhd %s has no JSON output", q.cmd.name)
	default:
		return usageErr("output=%s: want human or json", val)
	}
	return nil
}

// format takes -f on a command that reads only VHDs.
func (q *qemuArgs) qemuFormat(val string) error {
	switch val {
	case "vhd", "vpc":
		return nil // a VHD is found by its footer
	case "raw":
		if q.cmd.name == "create" {
			return usageErr("-f raw: vhd creates VHDs; a raw image is 'truncate -s SIZE FILE'")
		}
		return usageErr("-f raw: vhd %s works on VHD images; raw disks are read by convert, compare, map and measure", q.cmd.name)
	}
	return usageErr("-f %q: vhd reads VHD (vhd, vpc) and raw images; convert others with qemu-img convert -O vpc first", val)
}

// options takes qemu-img's -o list on create and convert.
func (q *qemuArgs) qemuOptions(val string) error {
	flag := map[string]string{"create": long("type"), "convert": long("to")}[q.cmd.name]
	for _, o := range strings.Split(val, ",") {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case k == "force_size":
			// vhd always keeps the exact size asked (no CHS rounding).
		case k == "subformat" && flag != "" && (v == "fixed" || v == "dynamic"):
			q.late = append(q.late, flag+"="+v)
		case k == "subformat" && flag != "":
			return usageErr("-o subformat=%s: want fixed or dynamic (vhd spells it %s fixed|dynamic)", v, flag)
		case k == "cluster_size" || k == "block_size" || k == "block_state_zero":
			return usageErr("-o %s: a VHD has no clusters; the block size of a dynamic image is %s SIZE (default 2M)", k, long("block-size"))
		default:
			return usageErr("-o %s: vhd %s has no such option; run 'vhd help %s' for its flags", o, q.cmd.name, q.cmd.name)
		}
	}
	return nil
}
