package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"
)

// progressBar draws one line on a terminal, redrawn at most ten times a
// second: a bar, bytes done of the total, the rate and the time left.
type progressBar struct {
	e     *env
	start time.Time
	last  time.Time
	drawn bool
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
