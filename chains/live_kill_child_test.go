package chains

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"vhdkit/engine"
)

// The child process of the live kill test: it serves base.vhd in its
// folder as a live chain (mode "live") or with an undo disk ("live-undo"),
// runs killWriters writers (live_kill_plan_test.go) and, one after
// another, live snapshots and merges of the top and the middle, or undo
// commits and discards, until it is killed. It tells the parent what it
// did on file descriptor 3, one line per event, each line one write(2) so
// that a kill never leaves half a line:
//
//	R                    the chain is open and the writers run
//	W w seq              writer w's operation seq returned
//	F w seq              ... and the Flush after it returned
//	B k kind path        live change k starts (snapshot, top, middle)
//	C k begin|end acked  undo commit k, with each writer's last returned seq
//	D k begin|end acked  undo discard k (writers paused: acked is exact)
//	E k                  live change k returned
//	P point              the live change reached a named point (live_hook.go)
//	K point              the child kills itself there (VHDKIT_LIVE_KILL_AT)
//	X message            something failed: the test fails
const (
	liveSeedEnv   = "VHDKIT_LIVE_SEED"
	liveKillAtEnv = "VHDKIT_LIVE_KILL_AT" // point/hit, e.g. merge:copied/2
)

// killLine writes event lines to the parent.
type killLine struct{ f *os.File }

func (l killLine) printf(format string, args ...any) {
	l.f.Write([]byte(fmt.Sprintf(format, args...) + "\n"))
}

func liveKillChild(mode, dir string) int {
	lg := killLine{os.NewFile(3, "events")}
	seed, _ := strconv.ParseUint(os.Getenv(liveSeedEnv), 10, 64)
	killAtPoint(lg, os.Getenv(liveKillAtEnv))
	go func() { time.Sleep(60 * time.Second); lg.printf("X never killed"); os.Exit(2) }()
	base := filepath.Join(dir, "base.vhd")
	var c *Chain
	var err error
	if mode == "live-undo" {
		c, _, err = OpenUndo(base, Options{})
	} else {
		c, err = Open(base, Options{})
	}
	if err != nil {
		lg.printf("X open: %v", err)
		return 1
	}
	kw := &killCrew{}
	for w := range killWriters {
		go kw.run(c, w, lg, seed)
	}
	lg.printf("R")
	rng := rand.New(rand.NewPCG(seed, 99))
	if mode == "live-undo" {
		err = kw.undoOps(c, lg, rng)
	} else {
		err = killOps(c, dir, lg, rng)
	}
	lg.printf("X %v", err)
	return 1
}

// killAtPoint makes the child log each named point its live changes
// reach and, if at is "point/hit", kill itself the hit-th time it reaches
// point: a SIGKILL aimed at a window too narrow for a timer.
func killAtPoint(lg killLine, at string) {
	point, hitStr, _ := strings.Cut(at, "/")
	hit, _ := strconv.Atoi(hitStr)
	var mu sync.Mutex
	hits := map[string]int{}
	liveHook = func(p string) {
		if strings.HasPrefix(p, "gate:") {
			return
		}
		mu.Lock()
		hits[p]++
		n := hits[p]
		mu.Unlock()
		if !strings.HasSuffix(p, ":copy") || n == 1 {
			lg.printf("P %s", p)
		}
		if p == point && n == hit {
			lg.printf("K %s", p)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}

// killCrew runs the writers. pause is held shared by each operation
// (with its Flush and the update of acked) and exclusively by an undo
// discard, so that a discard falls between two known operations of each
// writer. acked[w] is the last sequence number of writer w that returned.
type killCrew struct {
	pause sync.RWMutex
	acked [killWriters]atomic.Uint64
}

func (kw *killCrew) run(c *Chain, w int, lg killLine, seed uint64) {
	plan := newKillPlan(c.Size(), w, seed)
	buf := make([]byte, killGranule)
	for {
		op := plan.next()
		kw.pause.RLock()
		err := killDo(c, op, w, plan.seq, buf)
		kw.acked[w].Store(plan.seq)
		kw.pause.RUnlock()
		if err != nil {
			lg.printf("X writer %d operation %d: %v", w, plan.seq, err)
			os.Exit(1)
		}
		kind := "W"
		if op.flush {
			kind = "F"
		}
		lg.printf("%s %d %d", kind, w, plan.seq)
	}
}

func killDo(c *Chain, op killOp, w int, seq uint64, buf []byte) error {
	var err error
	if op.zero {
		err = c.Zero(op.off, op.n, engine.ZeroMayDeallocate)
	} else {
		fillVersion(buf[:op.n], w, seq, op.off)
		_, err = c.WriteAt(buf[:op.n], op.off)
	}
	if err == nil && op.flush {
		err = c.Flush()
	}
	return err
}

func (kw *killCrew) ackedList() string {
	var s []string
	for w := range killWriters {
		s = append(s, strconv.FormatUint(kw.acked[w].Load(), 10))
	}
	return strings.Join(s, " ")
}

// killOps runs live snapshots and merges of the top and of the middle
// one after another, as TestLiveChangesUnderWrites does.
func killOps(c *Chain, dir string, lg killLine, rng *rand.Rand) error {
	ctx := context.Background()
	for k := 0; ; k++ {
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		var err error
		switch depth := c.Depth(); {
		case depth == 1 || depth < 4 && rng.IntN(2) == 0:
			p := filepath.Join(dir, fmt.Sprintf("s%d.vhd", k))
			lg.printf("B %d snapshot %s", k, p)
			err = c.Snapshot(p)
		case depth > 2 && rng.IntN(2) == 0:
			p := c.Layers()[1].Path
			lg.printf("B %d middle %s", k, p)
			_, err = c.Merge(ctx, p, nil)
		default:
			lg.printf("B %d top %s", k, c.Layers()[0].Path)
			_, err = c.Merge(ctx, "", nil)
		}
		if err != nil {
			return fmt.Errorf("live change %d: %w", k, err)
		}
		lg.printf("E %d", k)
	}
}

// undoOps runs live undo commits (two in three) and discards.
func (kw *killCrew) undoOps(c *Chain, lg killLine, rng *rand.Rand) error {
	for k := 0; ; k++ {
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		if rng.IntN(3) == 0 {
			kw.pause.Lock()
			lg.printf("D %d begin %s", k, kw.ackedList())
			err := c.UndoDiscard()
			if err == nil {
				lg.printf("D %d end %s", k, kw.ackedList())
			}
			kw.pause.Unlock()
			if err != nil {
				return fmt.Errorf("undo discard %d: %w", k, err)
			}
			continue
		}
		lg.printf("C %d begin %s", k, kw.ackedList())
		if _, err := c.UndoCommit(context.Background(), nil); err != nil {
			return fmt.Errorf("undo commit %d: %w", k, err)
		}
		lg.printf("C %d end %s", k, kw.ackedList())
	}
}
