package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vhdkit/chains"
)

// What the vhd run tests that use the control socket share: a vhd run
// in the background with its console in a file, and the control:PATH
// it prints on its standard output (the console is not there).

// guestTimeout bounds a TCG guest's boot on two shared cores.
const guestTimeout = 4 * time.Minute

// counterGuest counts: each tick writes its number to the disk's first
// sector (fsynced) and prints it with the guest's uptime.
const counterGuest = `i=0
while true; do
  i=$((i+1))
  echo "$i" | dd of=/dev/vda bs=512 conv=sync,fsync 2>/dev/null
  echo "tick $i $(cut -d' ' -f1 /proc/uptime)"
  sleep 0.3
done
`

var tickRE = regexp.MustCompile(`tick (\d+) ([0-9.]+)`)

// ticksIn are the counter's numbers and uptimes in out.
func ticksIn(out string) (n []int, up []float64) {
	for _, m := range tickRE.FindAllStringSubmatch(out, -1) {
		i, _ := strconv.Atoi(m[1])
		u, _ := strconv.ParseFloat(m[2], 64)
		n, up = append(n, i), append(up, u)
	}
	return n, up
}

// running is a vhd run in the background.
type running struct {
	cmd     *exec.Cmd
	stderr  syncBuffer
	control string
	console string    // the file its console goes to
	typed   io.Writer // typed into the console (startRunTyped), or nil
	done    chan error
}

// startRun starts vhd run with args (which must send the console to
// the file console) and waits for its control:PATH line.
func startRun(t *testing.T, console string, args ...string) *running {
	t.Helper()
	return startRunIn(t, console, nil, args...)
}

// startRunTyped is startRun with a pipe to vhd run's standard input,
// which it types into the guest's console: r.typed.
func startRunTyped(t *testing.T, console string, args ...string) *running {
	t.Helper()
	in, typed, err := os.Pipe() // a file: vhd run reads it itself, and Wait waits for no copying
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { typed.Close() })
	r := startRunIn(t, console, in, args...)
	in.Close() // vhd run has its copy
	r.typed = typed
	return r
}

func startRunIn(t *testing.T, console string, stdin *os.File, args ...string) *running {
	t.Helper()
	r := &running{cmd: exec.Command(vhdBin, append([]string{"run", "--console", console}, args...)...), console: console, done: make(chan error, 1)}
	if stdin != nil {
		r.cmd.Stdin = stdin
	}
	r.cmd.Stderr = io.MultiWriter(os.Stderr, &r.stderr)
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		<-r.done
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		r.done <- r.cmd.Wait()
	}()
	timer := time.After(guestTimeout)
	for r.control == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("vhd run ended before printing control:PATH; console:\n%s", readFile(t, console))
			}
			if p, found := strings.CutPrefix(l, "control:"); found {
				r.control = p
			}
		case <-timer:
			t.Fatalf("vhd run printed no control:PATH within %v", guestTimeout)
		}
	}
	go func() {
		for range lines {
		}
	}()
	return r
}

// waitConsole waits until the console printed s past byte offset from
// and returns the offset just past it.
func (r *running) waitConsole(t *testing.T, s string, from int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := readFile(t, r.console)
		if i := strings.Index(out[min(from, len(out)):], s); i >= 0 {
			return min(from, len(out)) + i + len(s)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest did not print %q within %v; console:\n%s", s, timeout, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wait waits for vhd run to exit and returns how it ended.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(2 * time.Minute):
		r.cmd.Process.Signal(syscall.SIGTERM)
		t.Fatalf("vhd run did not exit; console:\n%s", readFile(t, r.console))
		return nil
	}
}

func (r *running) ctl(t *testing.T, code int, args ...string) result {
	t.Helper()
	return vhdCode(t, code, append([]string{"ctl", r.control}, args...)...)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// syncBuffer is a bytes.Buffer written by one goroutine, read by others.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// readImage reads n bytes at off of the image at path (with its chain),
// through the library.
func readImage(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	c, err := chains.Open(path, chains.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, n)
	if _, err := c.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}
