package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// errorCases are the mistakes a new user makes, one per command or
// more: a missing file, a folder, another format, junk, a damaged
// image, bad flag values, the wrong kind of image, a server that is not
// running. Paths are relative to the test's folder.
var errorCases = [][]string{
	{"info", "nosuch.vhd"}, {"info", "junk.bin"}, {"info", "q.qcow2"}, {"info", "dir"}, {"info", "bad.vhd"},
	{"info", "--bogus", "d.vhd"}, {"info"},
	{"create", "d.vhd", "10M"}, {"create", "x.vhd", "10Q"}, {"create", "--size", "10Q", "x.vhd"},
	{"create", "x.vhd"}, {"create", "nodir/x.vhd", "10M"}, {"create", "-o", "subformat=weird", "x.vhd", "1M"},
	{"convert", "--to", "dynamic", "nosuch.vhd", "o.vhd"}, {"convert", "--to", "dynamic", "q.qcow2", "o.vhd"},
	{"convert", "--to", "dynamic", "d.vhd", "nodir/o.vhd"}, {"convert", "-O", "qcow2", "d.vhd", "o.q"},
	{"snapshot", "d.vhd", "d.vhd"}, {"snapshot", "nosuch.vhd", "c.vhd"}, {"merge", "d.vhd"},
	{"set-parent", "d.vhd", "f.vhd"}, {"rebase", "d.vhd", "f.vhd"}, {"resize", "d.vhd"},
	{"resize", "--size", "5M", "d.vhd"}, {"resize", "--size", "-20M", "d.vhd"}, {"resize", "--to-minimum", "d.vhd"},
	{"compact", "f.vhd"}, {"compare", "d.vhd", "nosuch"}, {"map", "nosuch"}, {"map", "--output=xml", "d.vhd"},
	{"measure"}, {"mount", "d.vhd", "nodir/mnt"}, {"umount", "dir"}, {"umount", "d.vhd"},
	{"serve"}, {"serve", "--socket", "nodir/s.sock", "d.vhd"}, {"serve", "--stall-timeout", "5x", "d.vhd"},
	{"ctl", "nosuch.ctl", "status"}, {"ctl"}, {"backup", "list", "nosuch.ctl"}, {"backup", "pull", "nbd://127.0.0.1:1/x", "d.vhd"},
	{"undo", "commit", "d.vhd"}, {"undo", "frob", "d.vhd"}, {"repair", "junk.bin"}, {"tree", "nodir"},
	{"nosuchcmd"}, {"help", "nosuch"}, {"fuzz"}, {"completion", "tcsh"}, {"run"}, {"run", "--disk", "nosuch.vhd"},
	{"run", "--cpus", "x"}, {"map", "child.vhd"}, {"serve", "child.vhd"}, {"set-parent", "child.vhd", "d.vhd"},
	{"merge", "child.vhd"}, {"tree", "--parent-dir", "nodir", "."},
	{"snapshot", "d.vhd", "nodir/s.vhd"}, {"merge", "--to", "nodir/m.vhd", "d.vhd"}, {"convert", "--to", "dynamic", "d.vhd", "d.vhd/o.vhd"},
	{"backup", "pull", "nbd://127.0.0.1:1/x", "nodir/full.vhd"},
}

// badForm are what a message must not hold: Go's list brackets, a
// system call or package prefix, an error of the HTTP client or of
// strconv/time, a format verb gone wrong, a byte count said twice (and
// saidTwice).
var badForm = []*regexp.Regexp{
	regexp.MustCompile(`\[\S+( \S+)*\]`),
	regexp.MustCompile(`(^|: )(stat|open|lstat|openat) /`),
	regexp.MustCompile(`: vhd: |^vhd [a-z-]+: vhd: `),
	regexp.MustCompile(`Get "http|dial unix|strconv\.|time: |%!`),
	regexp.MustCompile(`\((\d+) bytes\) \(\d+ bytes\)`),
}

// TestErrorMessagesReadWell runs every case and holds its message to
// the rules of docs/CLI.md: exit 1 or 2; the first line starts with
// "vhd COMMAND: " and says it all on one line; after it at most one
// indented hint, or (exit 2) the usage and where to read more; nothing
// of badForm or saidTwice.
func TestErrorMessagesReadWell(t *testing.T) {
	dir := errorFixtures(t)
	for _, args := range errorCases {
		cmd := exec.Command(vhdBin, args...)
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput()
		code := cmd.ProcessState.ExitCode()
		name := strings.Join(args, " ")
		if code != 1 && code != 2 && code != 3 {
			t.Errorf("vhd %s: exit %d, want 1 or 2\n%s", name, code, out)
			continue
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		if want := "vhd " + firstWordOr(args, "") + ": "; !strings.HasPrefix(lines[0], want) && !strings.HasPrefix(lines[0], "vhd: ") {
			t.Errorf("vhd %s: first line %q does not start %q", name, lines[0], want)
		}
		usage := len(lines) > 1 && strings.HasPrefix(lines[1], "Usage: ")
		if rest := lines[1:]; !usage && (len(rest) > 1 || len(rest) == 1 && !strings.HasPrefix(rest[0], "  ")) ||
			usage && (code != 2 || len(rest) != 2 || !strings.HasPrefix(rest[1], "Run 'vhd help")) {
			t.Errorf("vhd %s: exit %d, more than the message and its hint or usage:\n%s", name, code, out)
		}
		for _, re := range badForm {
			if m := re.FindString(lines[0]); m != "" {
				t.Errorf("vhd %s: %q in %q", name, m, lines[0])
			}
		}
		if twice := saidTwice(lines[0]); twice != "" {
			t.Errorf("vhd %s: %q said twice in %q", name, twice, lines[0])
		}
	}
}

func firstWordOr(args []string, def string) string {
	if len(args) == 0 {
		return def
	}
	return args[0]
}

// errorFixtures makes the files errorCases name: d.vhd (dynamic), f.vhd
// (fixed), junk.bin (random bytes), bad.vhd (dynamic header cookie
// broken), q.qcow2 (by qemu-img), the folder dir, and child.vhd whose
// parent was renamed.
func errorFixtures(t *testing.T) string {
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	vhdOK(t, "create", "--size", "10M", at("d.vhd"))
	vhdOK(t, "create", "--type", "fixed", "--size", "10M", at("f.vhd"))
	vhdOK(t, "create", "--size", "10M", at("bad.vhd"))
	junk := make([]byte, 1<<20)
	for i := range junk {
		junk[i] = byte(i*7 + i>>9)
	}
	for name, b := range map[string][]byte{"junk.bin": junk} {
		if err := os.WriteFile(at(name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(at("bad.vhd"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("XXXX"), 512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", at("q.qcow2"), "10M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	if err := os.Mkdir(at("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	vhdOK(t, "create", "--size", "10M", at("base.vhd"))
	vhdOK(t, "snapshot", at("base.vhd"), at("child.vhd"))
	if err := os.Rename(at("base.vhd"), at("renamed.vhd")); err != nil {
		t.Fatal(err)
	}
	checkOK(t, at("d.vhd"))
	checkOK(t, at("f.vhd"))
	return dir
}

var quoted = regexp.MustCompile(`"[^"]*"`)

// saidTwice finds what a message repeats: a part between ": " equal to
// the next ("X: X: ...", "parent not found: C: parent not found"), or a
// quoted value given twice (`SIZE "10Q": size "10Q"`).
func saidTwice(line string) string {
	seen := map[string]bool{}
	for _, q := range quoted.FindAllString(line, -1) {
		if seen[q] {
			return q
		}
		seen[q] = true
	}
	parts := strings.Split(line, ": ")
	for i := 1; i < len(parts); i++ {
		if parts[i] == parts[i-1] || strings.HasSuffix(parts[i-1], " "+parts[i]) {
			return parts[i]
		}
	}
	for i, p := range parts {
		for _, q := range parts[i+1:] {
			if len(p) > 12 && p == q {
				return p
			}
		}
	}
	return ""
}
