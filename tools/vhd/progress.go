package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// progressBar draws one line on a terminal, redrawn at most ten times a
// second: a bar, bytes done of the total, the rate and the time left.
type progressBar struct {
	e     *env
	start time.Time
	last  time.Time
	drawn bool
	// lines: progress lines for a log (newProgressLog) instead of a
	// redrawn bar; nextPct is the percentage of the next line, ended
	// says the last line was printed.
	lines   bool
	nextPct float64
	ended   bool
}

func newProgressBar(e *env) *progressBar {
	return &progressBar{e: e, start: time.Now()}
}

// update is a Progress callback (engine.CopyOptions).
// A nil bar draws nothing, so commands pass bar.update unconditionally.
func (p *progressBar) update(done, total int64) {
	if p == nil {
		return
	}
	now := time.Now()
	if p.lines {
		p.logLine(done, total, now)
		return
	}
	if done < total && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	p.drawn = true
	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done) / elapsed
	}
	eta := "--:--"
	if rate > 0 && total >= done {
		eta = clock(time.Duration(float64(total-done) / rate * float64(time.Second)))
	}
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	text := fmt.Sprintf(" %5.1f%%  %s / %s  %s/s  ETA %s", pct,
		humanize.IBytes(uint64(done)), humanize.IBytes(uint64(total)), humanize.IBytes(uint64(rate)), eta)
	width := 80
	if ws, err := unix.IoctlGetWinsize(p.e.stderrFd, unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
		width = int(ws.Col)
	}
	bar := width - len(text) - 3
	if bar > 50 {
		bar = 50
	}
	line := text
	if bar >= 10 {
		fill := int(float64(bar) * pct / 100)
		line = "[" + strings.Repeat("=", fill) + strings.Repeat(" ", bar-fill) + "]" + text
	}
	fmt.Fprintf(p.e.stderr, "\r%s\x1b[K", line)
}

// finish ends the bar's line; calling it again does nothing.
func (p *progressBar) finish() {
	if p != nil && p.drawn {
		fmt.Fprintln(p.e.stderr)
		p.drawn = false
	}
}

func clock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// setupFlags declares cmd's flags on fs. A command that shows progress
// (it has --no-progress) also gets --progress, which shows it when
// stderr is not a terminal, as lines a log keeps.
func setupFlags(cmd *command, fs *pflag.FlagSet) (runFunc, *bool) {
	runFn := cmd.setup(fs)
	force := new(bool)
	if fs.Lookup("no-progress") != nil && fs.Lookup("progress") == nil {
		fs.BoolVarP(force, "progress", "p", false, "show progress even when stderr is not a terminal: a line at every tenth, and every 10 s")
	}
	return runFn, force
}

// newProgressLog reports progress as lines, for a log: at each tenth of
// the work, at least every 10 s, and at the end.
func newProgressLog(e *env) *progressBar {
	p := newProgressBar(e)
	p.lines = true
	return p
}

// logLine prints a progress line when one is due.
func (p *progressBar) logLine(done, total int64, now time.Time) {
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	if pct < p.nextPct && now.Sub(p.last) < 10*time.Second && done < total {
		return
	}
	if done >= total && p.ended {
		return
	}
	p.ended = done >= total
	p.last = now
	p.nextPct = float64(int(pct/10)*10 + 10)
	rate := 0.0
	if s := now.Sub(p.start).Seconds(); s > 0 {
		rate = float64(done) / s
	}
	fmt.Fprintf(p.e.stderr, "progress: %3.0f%%  %s / %s  %s/s\n", pct,
		humanize.IBytes(uint64(done)), humanize.IBytes(uint64(total)), humanize.IBytes(uint64(rate)))
}
