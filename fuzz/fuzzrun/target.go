package fuzzrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// Target is a parser under test, behind an adapter.
type Target interface {
	// Name is the target as given to --target.
	Name() string
	// Version is the target's own version line, for reports.
	Version() string
	// Read runs the target on the image top (its parents beside it),
	// with work as a scratch folder, and says what it saw.
	Read(ctx context.Context, top, work string) Observation
}

// Observation is what a target made of an image. Unknown fields stay at
// their zero value (Size -1).
type Observation struct {
	Refused bool   // the target rejected the image
	Why     string // its message when it did, or what crashed or hung
	Crash   string // signal or sanitizer report: a crash
	Hang    bool   // a command ran past the timeout
	Size    int64  // the disk size it reports, -1 unknown
	Type    string // "fixed", "dynamic", "differencing"; "" unknown
	Raw     []byte // the disk it read; nil when it reads none
	// Commands are the command lines run, for the report.
	Commands []string
}

// cmdResult is one command's outcome.
type cmdResult struct {
	stdout, stderr []byte
	exit           int
	crash          string // set for a signal or a sanitizer or panic report
	hang           bool
}

// sanitizer matches crash reports that programs print and survive or
// exit from: ASan, UBSan, MSan, glibc's aborts, Go's panics.
var sanitizer = regexp.MustCompile(`(?m)^(==\d+==ERROR: \w+Sanitizer.*|SUMMARY: \w+Sanitizer.*|\S+:\d+:\d+: runtime error: .*|panic: .*|fatal error: .*|\*\*\* .* \*\*\*: terminated|malloc\(\): .*|free\(\): .*|double free.*)$`)

// run runs argv with a timeout; the process group is killed when it
// runs out, so a hung child does not outlive the case.
func run(ctx context.Context, timeout time.Duration, argv []string) cmdResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	r := cmdResult{stdout: out.Bytes(), stderr: errb.Bytes()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		r.hang, r.exit = true, -1
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.crash = "killed by signal " + ws.Signal().String()
		}
	case err != nil:
		r.exit, r.crash = -1, "" // could not start: reported as refusal text
		r.stderr = []byte(err.Error())
	}
	if r.crash == "" {
		if m := sanitizer.Find(r.stderr); m != nil {
			r.crash = string(m)
		}
	}
	return r
}

// record adds a command's outcome to o; false when the case is over
// (a crash or hang, or a refusal).
func (o *Observation) record(argv []string, r cmdResult) bool {
	o.Commands = append(o.Commands, strings.Join(argv, " "))
	switch {
	case r.hang:
		o.Hang, o.Why = true, fmt.Sprintf("%s ran past the timeout", argv[0])
		return false
	case r.crash != "":
		o.Crash, o.Why = r.crash, firstLine(r.stderr)
		return false
	case r.exit != 0:
		o.Refused, o.Why = true, firstLine(r.stderr)
		if o.Why == "" {
			o.Why = fmt.Sprintf("%s exited with status %d", argv[0], r.exit)
		}
		return false
	}
	return true
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// versionOf is the first line a command prints.
func versionOf(argv ...string) string {
	r := run(context.Background(), 10*time.Second, argv)
	if v := firstLine(r.stdout); v != "" {
		return v
	}
	return firstLine(r.stderr)
}
