package main

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestProgressLines: with --progress and stderr not a terminal, convert
// reports progress as lines a log keeps, rising to 100%; -q (qemu-img's
// spelling) silences progress and the summary.
func TestProgressLines(t *testing.T) {
	img := dataImage(t) // 80 MiB, 64 of data
	dir := t.TempDir()
	r := vhdOK(t, "convert", "--progress", "--to", "raw", img, filepath.Join(dir, "a.raw"))
	var pcts []int
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		f := strings.Fields(strings.TrimPrefix(l, "progress:"))
		if !strings.HasPrefix(l, "progress:") || len(f) == 0 {
			t.Fatalf("not a progress line: %q\n%s", l, r)
		}
		p, err := strconv.Atoi(strings.TrimSuffix(f[0], "%"))
		if err != nil {
			t.Fatalf("progress line %q: %v", l, err)
		}
		pcts = append(pcts, p)
	}
	if len(pcts) < 2 || pcts[len(pcts)-1] != 100 {
		t.Fatalf("progress lines end at %v, want several rising to 100%%:\n%s", pcts, r.stderr)
	}
	for i := 1; i < len(pcts); i++ {
		if pcts[i] <= pcts[i-1] {
			t.Errorf("progress went from %d%% to %d%%", pcts[i-1], pcts[i])
		}
	}
	// Without --progress, a pipe gets no progress at all.
	if r := vhdOK(t, "convert", "--to", "raw", img, filepath.Join(dir, "b.raw")); strings.Contains(r.stderr, "progress") {
		t.Errorf("progress without --progress on a pipe:\n%s", r.stderr)
	}
	if r := vhdOK(t, "convert", "-q", "--progress", "--to", "raw", img, filepath.Join(dir, "c.raw")); r.stdout != "" || r.stderr != "" {
		t.Errorf("-q still printed:\n%s", r)
	}
	checkOK(t, img)
}

// TestProgressBarInTmux: on a terminal (tmux) convert draws one bar,
// redrawn in place, that ends at 100.0% with its line kept.
func TestProgressBarInTmux(t *testing.T) {
	img := dataImage(t)
	out := filepath.Join(t.TempDir(), "out.raw")
	session := "vhd-progress-" + filepath.Base(t.TempDir())
	cmd := vhdBin + " convert --to raw " + img + " " + out + "; echo DONE"
	if o, err := exec.Command("tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "20", "sh", "-c", cmd+"; sleep 60").CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v\n%s", err, o)
	}
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", session).Run() })
	waitPane(t, session, "DONE")
	pane, _ := exec.Command("tmux", "capture-pane", "-t", session, "-p").Output()
	text := string(pane)
	if strings.Count(text, "ETA") != 1 || !strings.Contains(text, "100.0%") || !strings.Contains(text, "[=====") {
		t.Errorf("the terminal does not show one finished bar:\n%s", text)
	}
	if !strings.Contains(text, "converted ") {
		t.Errorf("the summary is missing after the bar:\n%s", text)
	}
	checkOK(t, img)
}
