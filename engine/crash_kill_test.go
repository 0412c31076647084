package engine

// Process-kill test: a child process (this test binary, run again with
// killEnv set) writes to a real image file and prints a line after every
// completed Flush; the parent SIGKILLs it at a random moment, then
// repairs (at most), checks, and compares the image with the workload
// replayed up to the last Flush the child reported.

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const killEnv = "VHDKIT_KILL_CHILD"

// killSpec is what the child runs: the image and the workload's seed.
type killSpec struct {
	path     string
	seed     uint64
	size, bs int64
	nops     int // how many operations the workload has
}

func (k killSpec) String() string {
	return fmt.Sprintf("%s %d %d %d %d", k.path, k.seed, k.size, k.bs, k.nops)
}

func (k killSpec) workload() []workOp {
	unit := k.bs
	if unit == 0 {
		unit = 64 << 10
	}
	p := workloadParams{size: k.size, unit: unit, maxWrite: min(unit*3/2, 320<<10), flushRate: 8, reopen: true}
	return genWorkload(rand.New(rand.NewPCG(k.seed, 8)), p, k.nops)
}

// TestKillChild is the child of TestProcessKill and does nothing unless
// that test runs it.
func TestKillChild(t *testing.T) {
	spec := os.Getenv(killEnv)
	if spec == "" {
		t.Skip("the child of TestProcessKill")
	}
	var k killSpec
	if _, err := fmt.Sscan(spec, &k.path, &k.seed, &k.size, &k.bs, &k.nops); err != nil {
		t.Fatalf("bad %s %q: %v", killEnv, spec, err)
	}
	img, err := Open(k.path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cur := make([]byte, k.size)
	for i, o := range k.workload() {
		switch o.kind {
		case opWrite:
			p := o.data()
			copy(cur[o.off:], p)
			_, err = img.WriteAt(p, o.off)
		case opZero:
			clear(cur[o.off : o.off+o.n])
			err = img.Zero(o.off, o.n, o.mode)
		case opTrim:
			clear(cur[o.off : o.off+o.n])
			err = img.Trim(o.off, o.n)
		case opFlush:
			err = img.Flush()
		case opReopen:
			if err = img.Close(); err == nil {
				img, err = Open(k.path, Options{})
			}
		}
		if err != nil {
			t.Fatalf("op %d %s: %v", i, o, err)
		}
		if o.kind == opFlush || o.kind == opReopen {
			// Straight to the pipe, no buffering: once the line is out,
			// the parent may rely on it.
			fmt.Fprintf(os.Stdout, "flushed %d %x\n", i, sha256.Sum256(cur))
		}
	}
	img.Close()
	fmt.Fprintln(os.Stdout, "done")
}

func TestProcessKill(t *testing.T) {
	if os.Getenv(killEnv) != "" {
		t.Skip("in the child")
	}
	iters := 12
	if testing.Short() {
		iters = 4
	}
	for it := range iters {
		bs := []int64{512 << 10, 2 << 20, 64 << 10, 0}[it%4] // 0: fixed
		k := killSpec{
			path: filepath.Join(t.TempDir(), "kill.vhd"),
			seed: uint64(500 + it),
			size: 3*max(bs, 256<<10) + bs/2 + 5*SectorSize,
			bs:   bs,
			nops: 4000,
		}
		name := fmt.Sprintf("seed%d-block%dk", k.seed, bs>>10)
		if bs == 0 {
			name = fmt.Sprintf("seed%d-fixed", k.seed)
		}
		t.Run(name, func(t *testing.T) { killOnce(t, k) })
	}
}

func killOnce(t *testing.T, k killSpec) {
	typ := TypeDynamic
	if k.bs == 0 {
		typ = TypeFixed
	}
	img, err := Create(k.path, CreateOptions{Type: typ, Size: k.size, BlockSize: k.bs})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), killEnv+"="+k.String())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	rng := rand.New(rand.NewPCG(k.seed, 9))
	last, done := "", false
	take := func(line string) {
		switch {
		case strings.HasPrefix(line, "flushed "):
			last = line
		case line == "done":
			done = true
		}
	}
	// Let it report a few flushes, then kill it at a random moment.
	deadline := time.After(2 * time.Minute)
	for want := 1 + rng.IntN(30); want > 0 && !done; {
		select {
		case line, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("child ended early:\n%s", stderr.String())
			}
			if strings.HasPrefix(line, "flushed ") {
				want--
			}
			take(line)
		case <-deadline:
			cmd.Process.Kill()
			t.Fatal("child made no progress in 2 minutes")
		}
	}
	time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
	cmd.Process.Kill() // SIGKILL
	for line := range lines {
		take(line)
	}
	err = cmd.Wait()
	if !done && err == nil {
		t.Fatalf("child neither finished nor died")
	}
	if done && err != nil {
		t.Fatalf("child finished but failed: %v\n%s", err, stderr.String())
	}
	if last == "" {
		t.Fatalf("child reported no flush")
	}

	// Replay: the model as of the last reported flush, plus everything
	// the child may have written after it. It cannot have started an
	// operation past the next flush: it prints right after each.
	f := strings.Fields(last)
	at, _ := strconv.Atoi(f[1])
	ops := k.workload()
	next := len(ops) - 1
	for i := at + 1; i < len(ops); i++ {
		if ops[i].kind == opFlush || ops[i].kind == opReopen {
			next = i
			break
		}
	}
	m := newCrashModel(k.size)
	for i, o := range ops[:next+1] {
		switch o.kind {
		case opWrite:
			m.write(o.data(), o.off)
		case opZero, opTrim:
			m.zero(o.off, o.n)
		case opFlush, opReopen:
			if i <= at {
				m.flush()
			}
		}
		if i == at {
			if got := fmt.Sprintf("%x", sha256.Sum256(m.cur)); got != f[2] {
				t.Fatalf("replay of the workload up to op %d differs from what the child flushed", at)
			}
		}
	}

	rep, err := CheckPath(k.path, CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			if !p.Fixable {
				t.Fatalf("kill (last flush at op %d) left a problem repair cannot fix: %s", at, p)
			}
		}
		if _, err := Repair(k.path, RepairOptions{Bitmaps: true}); err != nil {
			t.Fatalf("repair: %v (problems %v)", err, rep.Problems)
		}
		after, err := CheckPath(k.path, CheckOptions{Bitmaps: true})
		if err != nil {
			t.Fatal(err)
		}
		if !after.OK() {
			t.Fatalf("problems after repair: %v (before: %v)", after.Problems, rep.Problems)
		}
	}
	img, err = Open(k.path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, k.size)
	if _, err := img.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if err := m.checkCrashed(got); err != nil {
		t.Fatalf("killed after the flush at op %d (done %v): %v", at, done, err)
	}
	t.Logf("killed after the flush at op %d of %d; problems before repair: %d", at, len(ops), len(rep.Problems))
}
