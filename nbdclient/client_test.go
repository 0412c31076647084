package nbdclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"vhdkit/engine"
	"vhdkit/nbdserve"
)

// The client against our own server (nbdserve) on a real dynamic VHD:
// negotiation, block status in both contexts, reads with holes,
// pipelined reads from many goroutines, errors the server reports.

const testSize = 64 << 20

// testWrites are where the test image holds data.
var testWrites = []struct{ off, n int64 }{{1 << 20, 4096}, {10<<20 + 512, 64 << 10}, {20 << 20, 2 << 20}}

// changedView lists fixed runs as changed (what a backup view does).
type changedView struct {
	engine.Disk
	runs []engine.Extent
}

func (d *changedView) ChangedExtents(off, n int64) ([]engine.Extent, error) {
	var out []engine.Extent
	for _, r := range d.runs {
		if s, e := max(r.Off, off), min(r.Off+r.Len, off+n); s < e {
			out = append(out, engine.Extent{Off: s, Len: e - s})
		}
	}
	return out, nil
}

// serveTestImage serves a dynamic image holding testWrites (a pattern
// seeded by offset) as export "disk", changes listed at changed, and
// returns the URI and what the disk holds.
func serveTestImage(t *testing.T, changed []engine.Extent) (string, []byte) {
	t.Helper()
	sock, model := serveImage(t, changed, nil, "unix")
	return "nbd+unix:///disk?socket=" + sock, model
}

// serveImage is serveTestImage with the server's TLS configuration
// (nil: plaintext), on a unix socket or on 127.0.0.1 ("tcp"); it returns
// the socket's path or HOST:PORT.
func serveImage(t *testing.T, changed []engine.Extent, tlsCfg *tls.Config, network string) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	img, err := engine.Create(filepath.Join(dir, "disk.vhd"), engine.CreateOptions{Type: engine.TypeDynamic, Size: testSize})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, testSize)
	for _, w := range testWrites {
		b := pattern(w.off, w.n)
		if _, err := img.WriteAt(b, w.off); err != nil {
			t.Fatal(err)
		}
		copy(model[w.off:], b)
	}
	var d engine.Disk = img
	if changed != nil {
		d = &changedView{Disk: img, runs: changed}
	}
	srv := &nbdserve.Server{Exports: map[string]*nbdserve.Export{"disk": {Name: "disk", Description: "a test disk", Disk: d}}, TLSConfig: tlsCfg}
	addr := filepath.Join(dir, "nbd.sock")
	if network == "tcp" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := img.Close(); err != nil {
			t.Error(err)
		}
		checkImage(t, filepath.Join(dir, "disk.vhd"))
	})
	return l.Addr().String(), model
}

func checkImage(t *testing.T, path string) {
	t.Helper()
	r, err := engine.CheckPath(path, engine.CheckOptions{})
	if err != nil || !r.OK() {
		t.Errorf("check %s: %v %v", path, err, r)
	}
}

func pattern(seed, n int64) []byte {
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32() | 1)
	}
	return b
}

func dialT(t *testing.T, uri string, contexts ...string) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), uri, Options{MetaContexts: contexts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestOwnServer(t *testing.T) {
	uri, model := serveTestImage(t, nil)
	c := dialT(t, uri, "base:allocation", "vhdkit:changed")
	info := c.Info()
	if info.Size != testSize || !info.Structured || info.ReadOnly() || !info.CanMultiConn() || info.Description != "a test disk" {
		t.Errorf("info: %+v", info)
	}
	if _, ok := info.Contexts["vhdkit:changed"]; ok || len(info.Contexts) != 1 {
		t.Errorf("contexts %v: want base:allocation alone (the disk lists no changes)", info.Contexts)
	}
	st, err := c.BlockStatus(context.Background(), 0, testSize)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{1 << 20, 3}, {4096, 0}, {10<<20 + 512 - (1<<20 + 4096), 3}, {64 << 10, 0},
		{20<<20 - (10<<20 + 512 + 64<<10), 3}, {2 << 20, 0}, {testSize - 22<<20, 3}}
	if !sameExtents(st["base:allocation"], want) {
		t.Errorf("block status %v, want %v", st["base:allocation"], want)
	}
	got := make([]byte, testSize)
	for off := int64(0); off < testSize; off += 4 << 20 {
		if err := c.ReadAt(context.Background(), got[off:off+4<<20], off); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, model) {
		t.Error("reads differ from what the disk holds")
	}
	var se *ServerError
	if err := c.ReadAt(context.Background(), make([]byte, 512), testSize); err == nil || errors.As(err, &se) {
		t.Errorf("read past the end: %v, want a client-side refusal", err)
	}
}

func sameExtents(a, b []Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestChangedContext: vhdkit:changed is selected where offered and its
// descriptors mark the listed runs.
func TestChangedContext(t *testing.T) {
	uri, _ := serveTestImage(t, []engine.Extent{{Off: 8 << 20, Len: 1 << 20}})
	c := dialT(t, uri, "base:allocation", "vhdkit:changed")
	st, err := c.BlockStatus(context.Background(), 0, testSize)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{8 << 20, 0}, {1 << 20, 1}, {testSize - 9<<20, 0}}
	if !sameExtents(st["vhdkit:changed"], want) {
		t.Errorf("vhdkit:changed %v, want %v", st["vhdkit:changed"], want)
	}
	if len(st["base:allocation"]) == 0 {
		t.Error("no base:allocation descriptors")
	}
}

// TestPipelinedReads: many goroutines share a connection with few slots;
// every read gets its own data.
func TestPipelinedReads(t *testing.T) {
	uri, model := serveTestImage(t, nil)
	c, err := Dial(context.Background(), uri, Options{MaxInFlight: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for range 50 {
				off := rng.Int64N(testSize-(256<<10)) &^ 511
				n := 512 + rng.Int64N(256<<10-512)
				b := make([]byte, n)
				if err := c.ReadAt(context.Background(), b, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(b, model[off:off+n]) {
					errs <- errors.New("a read got other data")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestCancelClosesConnection: a read whose context ends returns at once,
// and the connection is closed (its buffer can no longer be written).
func TestCancelClosesConnection(t *testing.T) {
	srvSide, cliSide := net.Pipe()
	defer srvSide.Close()
	c := newConn(cliSide, newReader(cliSide), Info{Size: 1 << 20, MaxBlock: 1 << 20, Structured: true}, Options{})
	go c.readReplies()
	go drain(srvSide)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.ReadAt(ctx, make([]byte, 4096), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled read: %v", err)
	}
	if err := c.ReadAt(context.Background(), make([]byte, 4096), 0); err == nil {
		t.Error("a read after the cancel succeeded")
	}
	c.Close()
}

// TestStall: a server that takes requests and answers nothing ends the
// connection after the stall timeout; an idle connection never stalls.
func TestStall(t *testing.T) {
	srvSide, cliSide := net.Pipe()
	defer srvSide.Close()
	c := newConn(cliSide, newReader(cliSide), Info{Size: 1 << 20, MaxBlock: 1 << 20, Structured: true}, Options{StallTimeout: 200 * time.Millisecond})
	go c.readReplies()
	go drain(srvSide)
	time.Sleep(400 * time.Millisecond) // idle: no deadline runs
	start := time.Now()
	err := c.ReadAt(context.Background(), make([]byte, 4096), 0)
	if !errors.Is(err, ErrStalled) || time.Since(start) > 5*time.Second {
		t.Errorf("read from a silent server: %v after %v", err, time.Since(start))
	}
	c.Close()
}

func drain(nc net.Conn) {
	b := make([]byte, 4096)
	for {
		if _, err := nc.Read(b); err != nil {
			return
		}
	}
}
