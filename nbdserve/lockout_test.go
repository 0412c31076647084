package nbdserve

import (
	"io"
	"net"
	"testing"
	"time"
)

// stallHandshakes opens n connections that read the greeting and then
// send nothing.
func stallHandshakes(t *testing.T, path string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		nc, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		cs = append(cs, nc)
	}
	return cs
}

// TestLockoutByStalledHandshakes: 300 connections that never negotiate
// fill the listener's 256 slots; a real client must still get in (the
// oldest negotiation makes room). Before, it was refused until the
// handshake timeout, and again as soon as the attacker reconnected.
func TestLockoutByStalledHandshakes(t *testing.T) {
	need(t, "nbdinfo")
	path, _ := testServer(t, oneExport(newMemDisk(1<<20)))
	stallHandshakes(t, path, 300)
	time.Sleep(100 * time.Millisecond)
	run(t, "nbdinfo", "--size", "nbd+unix:///d?socket="+path)
}

// TestLockoutByIdleClients: 256 clients that finish negotiating and sit
// idle fill the listener; a real client must still get in, the longest
// idle client being disconnected after its export is flushed. Before,
// every new client was refused for as long as they stayed.
func TestLockoutByIdleClients(t *testing.T) {
	need(t, "nbdinfo")
	d := newMemDisk(1 << 20)
	path, _ := testServer(t, oneExport(d))
	var idle []*client
	for range 256 {
		c := dial(t, path)
		c.open("d", false)
		idle = append(idle, c)
	}
	idle[0].request(0, cmdWrite, 1, 0, 5, []byte("first"))
	if r := idle[0].simpleReply(0); r.errno != 0 {
		t.Fatalf("write: %d", r.errno)
	}
	time.Sleep(2500 * time.Millisecond) // idle long enough to be closed
	flushes := d.flushes.Load()
	run(t, "nbdinfo", "--size", "nbd+unix:///d?socket="+path)
	idle[1].expectClosed() // the longest idle: idle[0] wrote since
	if d.flushes.Load() == flushes {
		t.Error("the export was not flushed when an idle client was closed")
	}
	// The others are still served.
	idle[0].request(0, cmdRead, 2, 0, 5, nil)
	if r := idle[0].simpleReply(5); r.errno != 0 || string(r.data) != "first" {
		t.Fatalf("read on a connection that stayed: %q %d", r.data, r.errno)
	}
}

// TestBusyConnectionsAreNotClosed: with every slot holding a request in
// flight a new client is refused; once they are idle long enough, it
// gets in.
func TestBusyConnectionsAreNotClosed(t *testing.T) {
	d := newMemDisk(1 << 20)
	release := make(chan struct{})
	d.onRead = func(int64) error { <-release; return nil }
	srv := oneExport(d)
	srv.MaxConnections = 2
	path, _ := testServer(t, srv)
	var cs []*client
	for i := range 2 {
		c := dial(t, path)
		c.open("d", false)
		c.request(0, cmdRead, uint64(i), 0, 512, nil)
		cs = append(cs, c)
	}
	time.Sleep(2500 * time.Millisecond) // idle enough, but busy
	if refused(t, path) == false {
		t.Error("a connection with a request in flight was closed for a new client")
	}
	close(release)
	for _, c := range cs {
		if r := c.simpleReply(512); r.errno != 0 {
			t.Fatalf("read: %d", r.errno)
		}
	}
	if !refused(t, path) {
		t.Error("a connection active a moment ago was closed for a new client")
	}
	time.Sleep(2500 * time.Millisecond)
	if refused(t, path) {
		t.Error("a new client was refused although both connections were idle")
	}
}

// refused dials and reports whether the server hung up instead of
// greeting.
func refused(t *testing.T, path string) bool {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hello [18]byte
	_, err = io.ReadFull(nc, hello[:])
	return err != nil
}
