package main

import (
	"strings"
	"testing"
)

// TestUnknownFlagsAnswered: a mistyped flag gets the flag meant, and
// qemu-nbd's and guestmount's flags get the vhd spelling, on the error's
// one line (exit 2). Before, every one was "unknown flag: --X" alone.
func TestUnknownFlagsAnswered(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--read-olny", "d.vhd"}, "unknown flag --read-olny; did you mean --read-only?"},
		{[]string{"serve", "--tls", "d.vhd"}, "did you mean --tls-ca or --tls-cert or --tls-key?"},
		{[]string{"serve", "--fuse-dir", "x", "d.vhd"}, "did you mean --fuse?"},
		{[]string{"info", "--js", "d.vhd"}, "did you mean --json?"},
		{[]string{"convert", "--too", "raw", "a", "b"}, "did you mean --to?"},
		{[]string{"serve", "--shared", "4", "d.vhd"}, "unknown flag --shared: vhd serve spells it --max-connections N"},
		{[]string{"serve", "-e", "4", "d.vhd"}, "unknown flag -e: vhd serve spells it --max-connections N (qemu-nbd's -e)"},
		{[]string{"serve", "-k", "/tmp/s", "d.vhd"}, "vhd serve spells it --socket PATH"},
		{[]string{"serve", "-x", "n", "d.vhd"}, "vhd serve disk.vhd=NAME"},
		{[]string{"serve", "--persistent", "d.vhd"}, "serves until it is stopped"},
		{[]string{"serve", "-c", "/dev/nbd0", "d.vhd"}, "nbd-client -unix SOCKET /dev/nbd0"},
		{[]string{"mount", "--ro", "d.vhd", "m"}, "vhd mount spells it --read-only (-r)"},
		{[]string{"mount", "-i", "d.vhd", "m"}, "vhd mount spells it --fs"},
		{[]string{"info", "--xyz", "d.vhd"}, "vhd info: unknown flag --xyz\n"},
	} {
		r := vhdCode(t, exitUsage, c.args...)
		if !strings.Contains(r.stderr, c.want) || strings.Count(r.stderr, "\n") != 3 {
			t.Errorf("vhd %s: want %q on the first of three lines:\n%s", strings.Join(c.args, " "), c.want, r.stderr)
		}
	}
}

// TestOtherFlagsAreNotOurs: every flag answered for another tool is one
// the command does not have (else the answer would hide it), and each
// answer that gives a spelling names a flag the command has.
func TestOtherFlagsAreNotOurs(t *testing.T) {
	for _, cmd := range commands {
		fs := newFlagSet(cmd)
		setupFlags(cmd, fs)
		for key, answer := range cmd.otherFlags {
			if strings.HasPrefix(key, "-") && fs.ShorthandLookup(key[1:]) != nil || fs.Lookup(key) != nil {
				t.Errorf("vhd %s has %s itself, yet answers it with %q", cmd.name, key, answer)
			}
			if strings.HasPrefix(answer, "--") {
				name := strings.TrimPrefix(strings.Fields(answer)[0], "--")
				name = strings.TrimSuffix(name, ":")
				if fs.Lookup(name) == nil {
					t.Errorf("vhd %s answers %s with --%s, which it does not have", cmd.name, key, name)
				}
			}
		}
	}
}
