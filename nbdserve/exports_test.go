package nbdserve

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"vhdkit/engine"
)

// newTestImage creates a dynamic image of size bytes and returns it open
// for writing, with its path.
func newTestImage(t *testing.T, size int64) (*engine.Image, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.vhd")
	img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	return img, p
}

func closeAndCheckImage(t *testing.T, img *engine.Image, path string) {
	t.Helper()
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, path)
}

// listed is what nbdinfo --list shows of the server at sock.
func listed(t *testing.T, sock string) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(run(t, "nbdinfo", "--list", "nbd+unix:///?socket="+sock), "\n") {
		// export="NAME":
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), `export="`); ok {
			names = append(names, strings.TrimSuffix(name, `":`))
		}
	}
	slices.Sort(names)
	return names
}

// TestExportsChangeWhileServing: exports added and removed while the
// server runs show in nbdinfo --list at once; a removed one can no
// longer be opened, an added one can; bad additions and removals are
// refused with a reason.
func TestExportsChangeWhileServing(t *testing.T) {
	need(t, "nbdinfo")
	a, pa := newTestImage(t, 4<<20)
	b, pb := newTestImage(t, 8<<20)
	c, pc := newTestImage(t, 16<<20)
	srv := &Server{Exports: map[string]*Export{"a": {Name: "a", Disk: a}, "b": {Name: "b", Disk: b}}}
	sock, stop := testServer(t, srv)
	uri := func(name string) string { return "nbd+unix:///" + name + "?socket=" + sock }
	want := func(names ...string) {
		t.Helper()
		if got := listed(t, sock); !slices.Equal(got, names) {
			t.Fatalf("nbdinfo --list shows %v, want %v", got, names)
		}
		if got := srv.ExportNames(); !slices.Equal(got, names) {
			t.Fatalf("ExportNames %v, want %v", got, names)
		}
	}
	want("a", "b")

	if err := srv.AddExport(&Export{Name: "c", Disk: c}); err != nil {
		t.Fatal(err)
	}
	want("a", "b", "c")
	if got := strings.TrimSpace(run(t, "nbdinfo", "--size", uri("c"))); got != "16777216" {
		t.Errorf("nbdinfo --size of the added export: %s", got)
	}

	removed, err := srv.RemoveExport(context.Background(), "a")
	if err != nil || removed.Disk != a {
		t.Fatalf("RemoveExport a: %v %v", removed, err)
	}
	want("b", "c")
	out, err := exec.Command("nbdinfo", uri("a")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "for export: a") {
		t.Errorf("nbdinfo of a removed export: %v\n%s", err, out)
	}

	for _, bad := range []*Export{{Name: "b", Disk: a}, {Name: "", Disk: a}, {Name: "x"}, nil} {
		if err := srv.AddExport(bad); err == nil {
			t.Errorf("AddExport %+v accepted", bad)
		}
	}
	if _, err := srv.RemoveExport(context.Background(), "a"); err == nil || !strings.Contains(err.Error(), `no export named "a"`) {
		t.Errorf("removing a removed export: %v", err)
	}
	want("b", "c")
	stop()
	closeAndCheckImage(t, a, pa)
	closeAndCheckImage(t, b, pb)
	closeAndCheckImage(t, c, pc)
}

// gatedDisk holds writes at a gate: entered counts the writes that
// reached it, so a test knows requests are in flight on the disk.
type gatedDisk struct {
	engine.Disk
	gate    chan struct{}
	entered atomic.Int32
	written atomic.Int32
	// flushedAfter counts flushes that began after every entered write
	// had returned.
	flushedAfter atomic.Int32
}

func (g *gatedDisk) WriteAt(p []byte, off int64) (int, error) {
	g.entered.Add(1)
	<-g.gate
	defer g.written.Add(1)
	return g.Disk.WriteAt(p, off)
}

func (g *gatedDisk) Flush() error {
	if g.written.Load() == g.entered.Load() && g.written.Load() > 0 {
		g.flushedAfter.Add(1)
	}
	return g.Disk.Flush()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// removalScript, run by nbdsh on the export being removed: eight 256 KiB
// writes in flight at once, each awaited (an error raises), then one
// more request, which must fail: the server has hung up.
const removalScript = `
blk = 256 * 1024
cookies = [h.aio_pwrite(bytes([i + 1]) * blk, i * blk) for i in range(8)]
print("submitted", flush=True)
for c in cookies:
    while not h.aio_command_completed(c):
        h.poll(-1)
print("answered", flush=True)
try:
    h.pread(512, 0)
    print("still connected", flush=True)
except nbd.Error as e:
    print("disconnected", flush=True)
`

// TestRemoveExportDrainsClients: a libnbd client has eight writes in
// flight on the disk when its export is removed. The export disappears
// from the list at once; every write is answered with success, the disk
// is flushed after the last of them, then the client is disconnected;
// RemoveExport returns only then. A client of another export carries on.
func TestRemoveExportDrainsClients(t *testing.T) {
	need(t, "nbdsh", "nbdinfo")
	img, path := newTestImage(t, 16<<20)
	g := &gatedDisk{Disk: img, gate: make(chan struct{})}
	other := newMemDisk(1 << 20)
	srv := &Server{Exports: map[string]*Export{"a": {Name: "a", Disk: g}, "other": {Name: "other", Disk: other}}}
	sock, stop := testServer(t, srv)
	bystander := dial(t, sock)
	bystander.open("other", false)

	cl := exec.Command("nbdsh", "-u", "nbd+unix:///a?socket="+sock, "-c", removalScript)
	cl.Env = append(os.Environ(), "PATH=/usr/bin:/bin:"+os.Getenv("PATH"))
	cl.Stderr = os.Stderr
	stdout, err := cl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
	}()
	waitFor(t, "eight writes on the disk", func() bool { return g.entered.Load() == 8 })

	type result struct {
		e   *Export
		err error
	}
	removed := make(chan result, 1)
	go func() {
		e, err := srv.RemoveExport(context.Background(), "a")
		removed <- result{e, err}
	}()
	waitFor(t, "the export to leave the table", func() bool { return !slices.Contains(srv.ExportNames(), "a") })
	if got := listed(t, sock); !slices.Equal(got, []string{"other"}) {
		t.Errorf("while its writes are in flight the removed export is listed: %v", got)
	}
	select {
	case r := <-removed:
		t.Fatalf("RemoveExport returned with writes in flight: %v", r.err)
	case <-time.After(100 * time.Millisecond):
	}
	close(g.gate)
	r := <-removed
	if r.err != nil || r.e.Disk != g {
		t.Fatalf("RemoveExport: %v", r.err)
	}
	if g.flushedAfter.Load() == 0 {
		t.Error("the disk was not flushed after the last write before RemoveExport returned")
	}
	<-printed
	if err := cl.Wait(); err != nil {
		t.Errorf("nbdsh: %v", err)
	}
	if got := strings.Join(lines, " "); got != "submitted answered disconnected" {
		t.Errorf("the client saw %q, want every write answered and then a disconnect", got)
	}

	bystander.request(0, cmdWrite, 1, 0, 4, []byte("also"))
	if rep := bystander.simpleReply(0); rep.errno != 0 {
		t.Errorf("a client of another export failed after the removal: errno %d", rep.errno)
	}
	stop()
	closeAndCheckImage(t, img, path)
	assertWrites(t, path, 8, 256<<10)
}

// assertWrites checks the image holds removalScript's writes.
func assertWrites(t *testing.T, path string, n, blk int) {
	t.Helper()
	d, err := engine.Open(path, engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	buf := make([]byte, blk)
	for i := range n {
		if _, err := d.ReadAt(buf, int64(i*blk)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, bytes.Repeat([]byte{byte(i + 1)}, blk)) {
			t.Errorf("write %d, answered before the removal, is not in the image", i)
		}
	}
}

// TestRemoveExportRefusesNewOpens: after the removal GO answers
// NBD_REP_ERR_UNKNOWN and EXPORT_NAME hangs up; a connection that had
// chosen the export and was idle is closed.
func TestRemoveExportRefusesNewOpens(t *testing.T) {
	d := newMemDisk(1 << 20)
	srv := oneExport(d)
	sock, _ := testServer(t, srv)
	idle := dial(t, sock)
	idle.open("d", false)
	negotiating := dial(t, sock)
	if _, err := srv.RemoveExport(context.Background(), "d"); err != nil {
		t.Fatal(err)
	}
	idle.expectClosed()
	if rs := negotiating.option(optGo, goData("d")); rs[len(rs)-1].typ != repErrUnknown {
		t.Errorf("GO of a removed export: reply %#x", rs[len(rs)-1].typ)
	}
	// The empty name selected it as the default.
	if rs := negotiating.option(optGo, goData("")); rs[len(rs)-1].typ != repErrUnknown {
		t.Errorf("GO of the default, removed: reply %#x", rs[len(rs)-1].typ)
	}
	negotiating.write(be64(optMagic), be32(optExportName), be32(1), []byte("d"))
	negotiating.expectClosed()
}

// TestRemoveExportClosesStalledClient: a client that takes no replies
// cannot hold a removal past ShutdownGrace: its connection is closed.
func TestRemoveExportClosesStalledClient(t *testing.T) {
	srv := oneExport(zeroDisk{size: 1 << 30})
	srv.ShutdownGrace = 300 * time.Millisecond
	sock, _ := testServer(t, srv)
	flood(t, sock, 1, 8)
	waitFor(t, "the flood to be read", func() bool { return live(srv) == 1 })
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if _, err := srv.RemoveExport(context.Background(), "d"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("RemoveExport took %v with a stalled client; the grace is %v", took, srv.ShutdownGrace)
	}
	waitFor(t, "the stalled connection to close", func() bool { return live(srv) == 0 })
}

// TestExportTableUnderLoad adds and removes exports while clients list
// and open them, for the race detector: every open either succeeds (and
// the connection serves, or is closed by a removal) or is told the export
// is unknown.
func TestExportTableUnderLoad(t *testing.T) {
	srv := &Server{Exports: map[string]*Export{"keep": {Name: "keep", Disk: newMemDisk(1 << 20)}}}
	sock, _ := testServer(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("x%d", i%3)
			if err := srv.AddExport(&Export{Name: name, Disk: newMemDisk(1 << 20)}); err != nil {
				t.Errorf("AddExport %s: %v", name, err)
				return
			}
			time.Sleep(2 * time.Millisecond) // long enough for some opens
			if _, err := srv.RemoveExport(ctx, name); err != nil {
				t.Errorf("RemoveExport %s: %v", name, err)
				return
			}
		}
	})
	var opened, unknown atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				c := dial(t, sock)
				c.option(optList, nil)
				rs := c.option(optGo, goData(fmt.Sprintf("x%d", w%3)))
				switch rs[len(rs)-1].typ {
				case repAck:
					opened.Add(1)
				case repErrUnknown:
					unknown.Add(1)
				default:
					t.Errorf("GO: reply %#x", rs[len(rs)-1].typ)
				}
				c.nc.Close()
			}
		})
	}
	wg.Wait()
	t.Logf("%d opens succeeded, %d found the export gone", opened.Load(), unknown.Load())
	if opened.Load() == 0 || unknown.Load() == 0 {
		t.Errorf("the load did not reach both outcomes: %d opened, %d unknown", opened.Load(), unknown.Load())
	}
	if names := srv.ExportNames(); !slices.Equal(names, []string{"keep"}) {
		t.Errorf("exports left: %v", names)
	}
}
