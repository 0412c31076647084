package nbdserve

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"testing"
)

// BenchmarkReadQD32 measures the server's request path: 4 KiB reads of a
// disk that costs nothing (zeroDisk), 32 in flight on one connection over
// a unix socket, structured replies, as fio --iodepth=32 sends them. It
// uses no API beyond Serve, so the same file can time an older commit.
func BenchmarkReadQD32(b *testing.B) {
	srv := oneExport(zeroDisk{size: 64 << 20})
	path := filepath.Join(b.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	defer func() { cancel(); <-done }()
	c := dial(b, path)
	c.open("d", true)
	const depth = 32
	sem := make(chan struct{}, depth)
	sendErr := make(chan error, 1)
	b.SetBytes(4096)
	b.ResetTimer()
	go func() {
		var req [requestSize]byte
		binary.BigEndian.PutUint32(req[0:], requestMagic)
		binary.BigEndian.PutUint16(req[6:], cmdRead)
		binary.BigEndian.PutUint32(req[24:], 4096)
		for i := range b.N {
			sem <- struct{}{}
			binary.BigEndian.PutUint64(req[8:], uint64(i))
			binary.BigEndian.PutUint64(req[16:], uint64(i*7919%16384)*4096)
			if _, err := c.nc.Write(req[:]); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	var hdr [chunkHdrSize]byte
	payload := make([]byte, 8+4096)
	for range b.N {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			b.Fatal(err)
		}
		n := binary.BigEndian.Uint32(hdr[16:])
		if typ := binary.BigEndian.Uint16(hdr[6:]); typ != replyOffsetData || n != uint32(len(payload)) {
			b.Fatalf("reply chunk type %d length %d", typ, n)
		}
		if _, err := io.ReadFull(c.br, payload); err != nil {
			b.Fatal(err)
		}
		<-sem
	}
	if err := <-sendErr; err != nil {
		b.Fatal(err)
	}
}
