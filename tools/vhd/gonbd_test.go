package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pojntfx/go-nbd/pkg/client"

	"vhdkit/service"
)

// Go programs reach NBD servers through github.com/pojntfx/go-nbd. Its
// client (v0.3.2) does two things: List, over a plain socket, and
// Connect, which negotiates and then hands the socket to the kernel's
// nbd driver (/dev/nbdN), through which the program reads and writes.
// Both run here against a real vhd serve. What it does differently from
// the NBD specification is written down in docs/CLI.md ("Clients").

// TestGoNBDList: go-nbd's List negotiates without the fixed-newstyle
// flag and reads a single reply, so it returns only the first export
// of a server that has several (the specification sends one
// NBD_REP_SERVER per export, then an ACK). vhd serve must still answer
// it, put up with its ABORT, and leave no client counted.
func TestGoNBDList(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.vhd"), filepath.Join(dir, "b.vhd")
	vhdOK(t, "create", "--size", "8M", a)
	vhdOK(t, "create", "--size", "8M", b)
	sock := filepath.Join(dir, "nbd.sock")
	srv := startServed(t, nil, "--socket", sock, a+"=alpha", b+"=beta")

	for range 3 { // and again: the ABORT left the server in order
		names := goNBDList(t, sock)
		if !slices.Equal(names, []string{"alpha"}) {
			t.Fatalf("go-nbd List: %q, want the first export only, [alpha] (go-nbd reads one reply)", names)
		}
	}
	var st service.Status
	vhdJSON(t, &st, "ctl", srv.control, "--json", "status")
	for _, e := range st.Exports {
		if e.NBD.ClientsConnected != 0 {
			t.Errorf("export %s counts %d clients after go-nbd's List hung up", e.Name, e.NBD.ClientsConnected)
		}
	}
	srv.stop(t)
	checkOK(t, a)
	checkOK(t, b)
}

func goNBDList(t *testing.T, sock string) []string {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	names, err := client.List(conn)
	if err != nil {
		t.Fatalf("go-nbd List against vhd serve: %v", err)
	}
	return names
}

// TestGoNBDConnect: go-nbd's Connect negotiates the export (OPT_GO with
// no information requests, a 4 KiB block size) and gives the socket to
// the kernel; a program then writes and reads /dev/nbd0. It needs the
// kernel's nbd driver, which not every machine has.
func TestGoNBDConnect(t *testing.T) {
	dev, err := os.OpenFile("/dev/nbd0", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("this machine cannot attach NBD block devices (no nbd kernel driver: %v)", err)
	}
	defer dev.Close()
	dir := t.TempDir()
	img := filepath.Join(dir, "d.vhd")
	vhdOK(t, "create", "--size", "16M", img)
	sock := filepath.Join(dir, "nbd.sock")
	srv := startServed(t, nil, "--socket", sock, img+"=default")
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- client.Connect(conn, dev, &client.Options{OnConnected: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("go-nbd Connect: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("go-nbd Connect: the device was not ready after 30 s")
	}
	want := bytes.Repeat([]byte("go-nbd!\n"), 8192) // 64 KiB
	if _, err := dev.WriteAt(want, 1<<20); err != nil {
		t.Fatalf("write /dev/nbd0: %v", err)
	}
	if err := dev.Sync(); err != nil {
		t.Fatalf("fsync /dev/nbd0 (NBD_CMD_FLUSH): %v", err)
	}
	got := make([]byte, len(want))
	if _, err := dev.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back through /dev/nbd0 differs (%v)", err)
	}
	if err := client.Disconnect(dev); err != nil {
		t.Errorf("go-nbd Disconnect: %v", err)
	}
	if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("go-nbd Connect returned %v after Disconnect", err)
	}
	srv.stop(t)
	checkOK(t, img)
	raw := filepath.Join(dir, "d.raw")
	vhdOK(t, "convert", "--to", "raw", img, raw)
	data, err := os.ReadFile(raw)
	if err != nil || !bytes.Equal(data[1<<20:1<<20+len(want)], want) {
		t.Fatalf("the image does not hold what go-nbd wrote (%v)", err)
	}
}
