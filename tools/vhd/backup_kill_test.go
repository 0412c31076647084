package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestBackupServerKilled is the crash must-show: vhd serve is
// killed (SIGKILL) at a random moment of a backup's begin, pull or end
// while an NBD client writes. After each kill every image checks clean
// (sectors under a clear bitmap bit aside: unflushed writes; and a fold
// the kill cut short, which check names as merge-unfinished), the
// server restarts on the chain (finishing an interrupted fold with
// 'vhd merge', as the refusal says), every write acknowledged before the
// backup is read back, and a new backup succeeds and reads as its
// export.
func TestBackupServerKilled(t *testing.T) {
	need(t, "nbdsh", "nbdcopy")
	dir, out := t.TempDir(), t.TempDir()
	vhdOK(t, "create", "--size", "64M", filepath.Join(dir, "disk.vhd"))
	killed := filepath.Join(out, "killed.vhd")
	rng := rand.New(rand.NewPCG(12, uint64(time.Now().UnixNano())))
	stages := map[string]int{}
	const rounds = 8
	for r := 0; r < rounds; r++ {
		srv := restartServer(t, dir, r)
		runMarks(t, srv.uris[0], r, r+1)
		took := cleanBackup(t, srv, filepath.Join(out, fmt.Sprintf("clean%d.vhd", r)))

		writer := startScribbler(t, srv.uris[0])
		seq := startBackupSeq(srv.control, killed)
		// took includes the clean pull's own check: most kills land before the end.
		time.Sleep(time.Duration(rng.Int64N(int64(took) * 8 / 10)))
		srv.cmd.Process.Signal(syscall.SIGKILL)
		srv.cmd.Wait()
		srv.stopped = true
		stages[seq.wait()]++
		writer.Wait()
		for _, p := range imagesIn(t, dir) {
			checkKilled(t, p)
		}
		settleKilledPull(t, killed)
	}
	srv := restartServer(t, dir, rounds)
	cleanBackup(t, srv, filepath.Join(out, "last.vhd"))
	srv.stop(t)
	for _, p := range imagesIn(t, dir) {
		checkOK(t, p)
	}
	t.Logf("killed during: %v", stages)
	if left, _ := filepath.Glob(filepath.Join(dir, "*.vhd.*")); len(left) > 0 {
		t.Logf("files beside the images: %v", left)
	}
}

// restartServer serves the chain's live top (the only leaf of dir) as
// export disk, after finishing a fold the kill interrupted half-way with
// the 'vhd merge' that vhd tree names (and vhd serve's refusal). It
// checks that the marks of the rounds before this one are there.
func restartServer(t *testing.T, dir string, marks int) *served {
	t.Helper()
	finishFolds(t, dir)
	leaves := treeLeaves(t, dir)
	if len(leaves) != 1 {
		t.Fatalf("the chain has %d leaves: %v\n%s", len(leaves), leaves, vhd(t, "tree", dir))
	}
	srv, stderr, err := tryServe(filepath.Join(dir, "nbd.sock"), leaves[0]+"=disk")
	if err != nil {
		t.Fatalf("vhd serve after a kill: %v\n%s", err, stderr)
	}
	t.Cleanup(func() { srv.stop(t) })
	runMarks(t, srv.uris[0], -1, marks)
	return srv
}

// finishFolds runs the merges vhd tree says were interrupted.
func finishFolds(t *testing.T, dir string) {
	t.Helper()
	tree := vhdOK(t, "tree", dir).stdout
	done := map[string]bool{}
	for _, m := range regexp.MustCompile("run `vhd merge ([^`]+)` again").FindAllStringSubmatch(tree, -1) {
		if !done[m[1]] {
			done[m[1]] = true
			t.Logf("finishing a fold the kill interrupted: vhd merge %s", m[1])
			vhdOK(t, "merge", m[1])
		}
	}
}

// tryServe starts vhd serve on args and reads its lines up to control:;
// if it exits first, it returns what it said.
func tryServe(sock string, args ...string) (*served, string, error) {
	s := &served{cmd: exec.Command(vhdBin, append([]string{"serve", "--socket", sock}, args...)...)}
	var stderr bytes.Buffer
	s.cmd.Stderr = &stderr
	pipe, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, "", err
	}
	lines := bufio.NewReader(pipe)
	for s.control == "" {
		line, err := lines.ReadString('\n')
		if err != nil {
			werr := s.cmd.Wait()
			return nil, stderr.String(), errors.Join(errors.New("vhd serve stopped before printing control:PATH"), werr)
		}
		line = strings.TrimSpace(line)
		if c, ok := strings.CutPrefix(line, "control:"); ok {
			s.control = c
		} else {
			s.uris = append(s.uris, line)
		}
	}
	go io.Copy(io.Discard, lines)
	return s, "", nil
}

// The marks: round r writes 1 MiB of byte r+1 at r MiB and flushes
// before its backup; every later restart reads them all back.
const marksScript = `
import os
r = int(os.environ["ROUND"])
if r >= 0:
    h.pwrite(bytes([r + 1]) * (1 << 20), r << 20)
    h.flush()
for i in range(int(os.environ["UPTO"])):
    if h.pread(1 << 20, i << 20) != bytes([i + 1]) * (1 << 20):
        print("MISSING mark", i, flush=True)
        raise SystemExit(1)
`

// runMarks writes round r's mark (none if r < 0) and checks the marks
// of rounds 0..upto-1.
func runMarks(t *testing.T, uri string, r, upto int) {
	t.Helper()
	cmd := clientCmd("nbdsh", "-u", uri, "-c", marksScript)
	cmd.Env = append(cmd.Env, fmt.Sprintf("ROUND=%d", r), fmt.Sprintf("UPTO=%d", upto))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the acknowledged marks (round %d, %d of them): %v\n%s", r, upto, err, b)
	}
}

// cleanBackup takes a full backup that nothing interrupts, checks that it
// reads as its export, and says how long begin, pull and end took.
func cleanBackup(t *testing.T, srv *served, dest string) time.Duration {
	t.Helper()
	start := time.Now()
	b := begin(t, srv.control, "disk")
	pull(t, b.URIs[0], dest)
	took := time.Since(start)
	if !bytes.Equal(readBackup(t, dest), nbdRead(t, b.URIs[0])) {
		t.Fatal("a backup after a restart differs from its export")
	}
	start = time.Now()
	vhdOK(t, "backup", "end", "--no-progress", srv.control, "disk")
	return took + time.Since(start)
}

// startScribbler writes 64 KiB of random data at random places of
// [16 MiB, 48 MiB) until the server goes away (its writes are not
// checked: the kill may lose the unflushed ones).
func startScribbler(t *testing.T, uri string) *exec.Cmd {
	t.Helper()
	cmd := clientCmd("nbdsh", "-u", uri, "-c", `
import os, random
while True:
    h.pwrite(os.urandom(65536), random.randrange(256, 768) * 65536)
`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// backupSeq runs begin, pull and end one after the other, in the
// background, and knows which one ran last.
type backupSeq struct {
	mu    sync.Mutex
	stage string
	done  chan struct{}
}

func startBackupSeq(ctl, dest string) *backupSeq {
	s := &backupSeq{stage: "before begin", done: make(chan struct{})}
	go func() {
		defer close(s.done)
		var uri string
		steps := []struct {
			name string
			args func() []string
		}{
			{"begin", func() []string { return []string{"backup", "begin", ctl, "disk"} }},
			{"pull", func() []string { return []string{"backup", "pull", "--no-progress", uri, dest} }},
			{"end", func() []string { return []string{"backup", "end", "--no-progress", ctl, "disk"} }},
		}
		for _, st := range steps {
			s.set(st.name)
			b, err := exec.Command(vhdBin, st.args()...).Output()
			if err != nil {
				return
			}
			if st.name == "begin" {
				uri = strings.Fields(string(b))[0]
			}
		}
		s.set("after end")
	}()
	return s
}

func (s *backupSeq) set(stage string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stage = stage
}

// wait waits for the sequence and says in which step the kill came.
func (s *backupSeq) wait() string {
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stage
}

// settleKilledPull checks what a killed backup's pull left: a whole
// backup (the kill came later), or DEST.part and its state, which the
// next round's pull to the same name starts over from (another point).
func settleKilledPull(t *testing.T, dest string) {
	t.Helper()
	if _, err := os.Stat(dest); err == nil {
		checkOK(t, dest)
		os.Remove(dest)
	}
}

// checkKilled checks an image a killed server wrote: no problem but the
// two a crash may leave of writes that never reached a flush (reads do
// not show them; vhd repair tidies them): sectors holding data under a
// clear bitmap bit, and blocks allocated past the last one the BAT
// names.
func checkKilled(t *testing.T, path string) {
	t.Helper()
	r := vhd(t, "check", "--json", "--bitmaps", path)
	var rep struct {
		Problems []struct {
			Code, Message string
			Fatal         bool
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || (r.code != 0 && r.code != 3) {
		t.Fatalf("vhd check %s after a kill: %v\n%s", path, err, r)
	}
	for _, p := range rep.Problems {
		// merge-unfinished: a kill during end's fold; the next
		// restartServer finishes it, and the last check wants all clean.
		if p.Fatal || (p.Code != "data-under-clear-bit" && p.Code != "orphan-tail" && p.Code != "merge-unfinished") {
			t.Errorf("vhd check %s after a kill: %s: %s", path, p.Code, p.Message)
		}
	}
}

// imagesIn lists the VHDs of dir.
func imagesIn(t *testing.T, dir string) []string {
	t.Helper()
	ls, err := filepath.Glob(filepath.Join(dir, "*.vhd"))
	if err != nil || len(ls) == 0 {
		t.Fatalf("no images in %s: %v", dir, err)
	}
	return ls
}
