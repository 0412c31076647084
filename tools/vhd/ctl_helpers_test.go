package main

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What the vhd ctl tests share: a vhd serve started in the background
// with the lines it prints, a background NBD client (nbdsh) that writes
// and checks its writes, and the test's own region of the disk, written
// through FUSE and read back through FUSE and NBD.

// served is a running vhd serve and what it printed.
type served struct {
	cmd     *exec.Cmd
	uris    []string
	fuse    string
	control string
	stopped bool
}

// startServed starts vhd serve with args and reads what it prints up to
// its control:PATH line.
func startServed(t *testing.T, env []string, args ...string) *served {
	t.Helper()
	return startServedIn(t, "", env, args...)
}

// startServedIn is startServed run in the folder dir.
func startServedIn(t *testing.T, dir string, env []string, args ...string) *served {
	t.Helper()
	s := &served{cmd: exec.Command(vhdBin, append([]string{"serve"}, args...)...)}
	s.cmd.Dir = dir
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stderr = os.Stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop(t) })
	r := bufio.NewReader(out)
	for s.control == "" {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("vhd serve stopped before printing control:PATH: %v", err)
		}
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "fuse:"):
			s.fuse = strings.TrimPrefix(line, "fuse:")
		case strings.HasPrefix(line, "control:"):
			s.control = strings.TrimPrefix(line, "control:")
		default:
			s.uris = append(s.uris, line)
		}
	}
	go io.Copy(io.Discard, r)
	return s
}

// stop ends the server with SIGTERM and waits for it (it must exit 0).
func (s *served) stop(t *testing.T) {
	t.Helper()
	if s.stopped {
		return
	}
	s.stopped = true
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("vhd serve after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-done
		t.Error("vhd serve did not exit 30 s after SIGTERM")
	}
}

// ctl runs vhd ctl against the server and fails unless it exits code.
func (s *served) ctl(t *testing.T, code int, args ...string) result {
	t.Helper()
	return vhdCode(t, code, append([]string{"ctl", s.control}, args...)...)
}

// nbdClient is an nbdsh running clientScript in the background.
type nbdClient struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	stop string
}

// clientScript writes (MODE=write) or reads (MODE=read) 64 KiB blocks of
// the first REGION bytes, QD requests in flight (8 unless set), until the
// file STOP exists. The writer sends distinct blocks in each batch, keeps the last
// content of each, flushes now and then, and at the end reads the whole
// region back and compares. Any failed request raises: nbdsh exits 1.
const clientScript = `
import os, random, sys
region, stop, mode = int(os.environ["REGION"]), os.environ["STOP"], os.environ["MODE"]
blk = 64 * 1024
slots = region // blk
model = {}
rnd = random.Random(int(os.environ["SEED"]))
seq = 0
while not os.path.exists(stop):
    batch = []
    for slot in rnd.sample(range(slots), int(os.environ.get("QD", "8"))):
        seq += 1
        if mode == "write":
            buf = (seq.to_bytes(8, "big") + slot.to_bytes(8, "big")) * (blk // 16)
            batch.append((h.aio_pwrite(buf, slot * blk), slot, buf))
        else:
            rbuf = nbd.Buffer(blk)
            batch.append((h.aio_pread(rbuf, slot * blk), slot, rbuf))
    for c, slot, buf in batch:
        while not h.aio_command_completed(c):
            h.poll(-1)
        if mode == "write":
            model[slot] = buf
    if mode == "write" and seq % 512 == 0:
        h.flush()
if mode == "write":
    h.flush()
    zero = bytes(blk)
    for slot in range(slots):
        if h.pread(blk, slot * blk) != model.get(slot, zero):
            print("MISMATCH at block", slot, flush=True)
            sys.exit(1)
print("OK", seq, flush=True)
`

// startClient starts an NBD client on uri over the first region bytes.
func startClient(t *testing.T, uri, mode string, region int64, seed int, env ...string) *nbdClient {
	t.Helper()
	c := &nbdClient{stop: filepath.Join(t.TempDir(), "stop")}
	c.cmd = clientCmd("nbdsh", "-u", uri, "-c", clientScript)
	c.cmd.Env = append(c.cmd.Env, "REGION="+strconv.FormatInt(region, 10), "STOP="+c.stop, "MODE="+mode, "SEED="+strconv.Itoa(seed))
	c.cmd.Env = append(c.cmd.Env, env...)
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	})
	return c
}

// finish stops the client; it must have made requests, none failed,
// and (a writer) read back every write.
func (c *nbdClient) finish(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(c.stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := c.cmd.Wait()
	if f := strings.Fields(c.out.String()); err != nil || len(f) != 2 || f[0] != "OK" || f[1] == "0" {
		t.Fatalf("NBD client: %v\n%s", err, c.out.String())
	}
	t.Logf("NBD client: %s", strings.TrimSpace(c.out.String()))
}

// testRegion is the part of the disk the test itself writes, through FUSE,
// with a model of what it holds.
type testRegion struct {
	disk  string // the FUSE file
	off   int64
	model []byte
	rng   *rand.Rand
}

func newRegion(disk string, off, n int64) *testRegion {
	return &testRegion{disk: disk, off: off, model: make([]byte, n), rng: rand.New(rand.NewPCG(uint64(off), 7))}
}

// write puts n random bytes at a random place of the region through
// the FUSE file, and syncs (a Flush).
func (r *testRegion) write(t *testing.T, n int) {
	t.Helper()
	at := r.rng.IntN(len(r.model)-n) &^ 511
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.rng.Uint32())
	}
	f, err := os.OpenFile(r.disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, r.off+int64(at)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	copy(r.model[at:], b)
}

// same checks that the FUSE file and an NBD client (nbdcopy) read the
// region as the model says, and returns what NBD read of the whole disk.
func (r *testRegion) same(t *testing.T, uri, when string) []byte {
	t.Helper()
	viaNBD := nbdRead(t, uri)
	f, err := os.Open(r.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	viaFUSE := make([]byte, len(r.model))
	if _, err := f.ReadAt(viaFUSE, r.off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(viaFUSE, r.model) {
		t.Fatalf("%s: the FUSE file does not read what was written", when)
	}
	if !bytes.Equal(viaNBD[r.off:r.off+int64(len(r.model))], r.model) {
		t.Fatalf("%s: NBD does not read what was written", when)
	}
	return viaNBD
}

// nbdRead reads a whole export with nbdcopy.
func nbdRead(t *testing.T, uri string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "copy.raw")
	if b, err := clientCmd("nbdcopy", uri, out).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy %s: %v\n%s", uri, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(out)
	return b
}
