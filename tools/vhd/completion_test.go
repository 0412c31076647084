package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The completion scripts are tried in the real shells (scripts/setup.sh
// installs bash, zsh, fish and tmux): bash through its completion
// function, fish through 'complete -C', zsh typed into an interactive
// shell in tmux, TAB and all.

func writeCompletion(t *testing.T, shell string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vhd."+shell)
	if err := os.WriteFile(p, []byte(vhdOK(t, "completion", shell).stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCompletionBash(t *testing.T) {
	script := writeCompletion(t, "bash")
	cases := map[string]string{
		"vhd se":               "set-parent serve",
		"vhd serve --fo":       "--fork",
		"vhd undo c":           "commit",
		"vhd help um":          "umount",
		"vhd umount --al":      "--all",
		"vhd reset-id --u":     "--uuid",
		"vhd resize --size ''": "", // a value: left to the shell's files
		"vhd undo commit ''":   "", // the image: files
	}
	for line, want := range cases {
		cmd := exec.Command("bash", "--norc", "-c", `source "$1"; eval "COMP_WORDS=($2)"; COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _vhd; echo "${COMPREPLY[*]}"`, "bash", script, line)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("bash completes %q to %q (%v), want %q", line, strings.TrimSpace(string(out)), err, want)
		}
	}
}

func TestCompletionFish(t *testing.T) {
	script := writeCompletion(t, "fish")
	cases := map[string]string{
		"vhd serve --fo": "--fork\tserve in the background",
		"vhd und":        "undo\tkeep, commit or discard",
		"vhd undo d":     "discard",
		"vhd mount --re": "--read-only\trefuse writes",
	}
	for line, want := range cases {
		out, err := exec.Command("fish", "--no-config", "-c", `source $argv[1]; complete -C $argv[2]`, script, line).CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("fish completes %q to %q (%v), want %q", line, out, err, want)
		}
	}
}

// TestCompletionZsh types into an interactive zsh (in tmux) and presses
// TAB, as a user would.
func TestCompletionZsh(t *testing.T) {
	script := writeCompletion(t, "zsh")
	bin := filepath.Dir(vhdBin)
	session := "vhd-zsh-" + filepath.Base(t.TempDir())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("tmux", args...).CombinedOutput(); err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
	}
	run("new-session", "-d", "-s", session, "-x", "200", "-y", "50",
		"env", "-i", "HOME="+t.TempDir(), "TERM=xterm", "PATH="+bin+":/usr/bin:/bin", "zsh", "-f")
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", session).Run() })
	run("send-keys", "-t", session, "autoload -U compinit && compinit -u && source "+script+" && echo READY", "Enter")
	waitPane(t, session, "READY")
	run("send-keys", "-t", session, "vhd serve --fo", "Tab")
	waitPane(t, session, "vhd serve --fork")
	run("send-keys", "-t", session, "C-u", "vhd undo ", "Tab")
	waitPane(t, session, "discard")
	run("send-keys", "-t", session, "C-u", "vhd help compl", "Tab")
	waitPane(t, session, "vhd help completion")
}

// waitPane waits until the tmux pane shows want.
func waitPane(t *testing.T, session, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := exec.Command("tmux", "capture-pane", "-t", session, "-p").Output()
		if err == nil && strings.Contains(string(out), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the terminal never showed %q; it shows:\n%s", want, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestManPage: the page is valid roff (groff warns about nothing), man
// renders it, and it holds every command and every flag help shows.
func TestManPage(t *testing.T) {
	page := vhdOK(t, "man").stdout
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("groff -ww warns about the man page (%v):\n%s", err, out)
	}
	man := exec.Command("man", "-l", "-")
	man.Stdin = strings.NewReader(page)
	man.Env = append(os.Environ(), "MANWIDTH=300", "MANPAGER=cat", "PAGER=cat")
	out, err := man.Output()
	if err != nil {
		t.Fatalf("man -l: %v", err)
	}
	text := string(out)
	for _, c := range cliModel() {
		if !strings.Contains(text, "vhd "+c.cmd.name+" ") {
			t.Errorf("the man page has no section for vhd %s", c.cmd.name)
		}
		for _, f := range c.flags {
			if !strings.Contains(text, "--"+f.long) {
				t.Errorf("the man page does not name vhd %s --%s", c.cmd.name, f.long)
			}
		}
	}
}
