package nbdserve

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"vhdkit/engine"
)

// testServer runs srv on a unix socket in a temporary folder until the
// test ends, and returns the socket path.
func testServer(t *testing.T, srv *Server) (path string, stop func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("Serve did not return after shutdown")
			}
		})
	}
	t.Cleanup(stop)
	return path, stop
}

func oneExport(d engine.Disk) *Server {
	return &Server{Exports: map[string]*Export{"d": {Name: "d", Description: "test disk", Disk: d}}, Default: "d"}
}

// client is a minimal NBD client speaking the wire format directly, so
// tests can send what real clients never would.
type client struct {
	t    testing.TB
	nc   net.Conn
	br   *bufio.Reader
	size uint64
	// flags are the transmission flags.
	flags uint16
}

func dial(t testing.TB, path string) *client {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc)}
	var hello [18]byte
	c.read(hello[:])
	if binary.BigEndian.Uint64(hello[0:]) != nbdMagic || binary.BigEndian.Uint64(hello[8:]) != optMagic {
		t.Fatalf("bad greeting % x", hello)
	}
	c.write(be32(clientFixedNewstyle | clientNoZeroes))
	return c
}

func (c *client) read(b []byte) {
	c.t.Helper()
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("read: %v", err)
	}
}

func (c *client) write(bs ...[]byte) {
	c.t.Helper()
	for _, b := range bs {
		if _, err := c.nc.Write(b); err != nil {
			c.t.Fatalf("write: %v", err)
		}
	}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// option sends an option and returns its replies up to the final one.
func (c *client) option(opt uint32, data []byte) []optReply {
	c.t.Helper()
	c.write(be64(optMagic), be32(opt), be32(uint32(len(data))), data)
	var out []optReply
	for {
		var h [optReplyHdrSize]byte
		c.read(h[:])
		if binary.BigEndian.Uint64(h[0:]) != optReplyMagic || binary.BigEndian.Uint32(h[8:]) != opt {
			c.t.Fatalf("bad option reply header % x", h)
		}
		r := optReply{typ: binary.BigEndian.Uint32(h[12:]), data: make([]byte, binary.BigEndian.Uint32(h[16:]))}
		c.read(r.data)
		out = append(out, r)
		if r.typ == repAck || r.typ&(1<<31) != 0 {
			return out
		}
	}
}

type optReply struct {
	typ  uint32
	data []byte
}

func goData(name string, infos ...uint16) []byte {
	b := cat(be32(uint32(len(name))), []byte(name), be16(uint16(len(infos))))
	for _, i := range infos {
		b = append(b, be16(i)...)
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := cat(be32(uint32(len(name))), []byte(name), be32(uint32(len(queries))))
	for _, q := range queries {
		b = append(b, cat(be32(uint32(len(q))), []byte(q))...)
	}
	return b
}

// open negotiates structured replies (if asked), base:allocation and GO.
func (c *client) open(name string, structured bool) {
	c.t.Helper()
	if structured {
		if r := c.option(optStructuredReply, nil); r[0].typ != repAck {
			c.t.Fatalf("STRUCTURED_REPLY: %#x", r[0].typ)
		}
		if r := c.option(optSetMetaContext, metaData(name, metaBaseAllocation)); r[len(r)-1].typ != repAck || len(r) != 2 {
			c.t.Fatalf("SET_META_CONTEXT: %v", r)
		}
	}
	rs := c.option(optGo, goData(name))
	if last := rs[len(rs)-1]; last.typ != repAck {
		c.t.Fatalf("GO %q: reply %#x %q", name, last.typ, last.data)
	}
	for _, r := range rs {
		if r.typ == repInfo && binary.BigEndian.Uint16(r.data) == infoExport {
			c.size = binary.BigEndian.Uint64(r.data[2:])
			c.flags = binary.BigEndian.Uint16(r.data[10:])
		}
	}
}

func (c *client) request(flags, typ uint16, handle, off uint64, length uint32, data []byte) {
	c.t.Helper()
	c.write(cat(be32(requestMagic), be16(flags), be16(typ), be64(handle), be64(off), be32(length), data))
}

// reply is one reply, simple or structured (all chunks gathered).
type reply struct {
	handle uint64
	errno  uint32
	data   []byte // READ data reassembled (holes as zeros)
	holes  int    // number of hole chunks
	chunks int
	status []byte // BLOCK_STATUS payload
}

// simpleReply reads a simple reply carrying n bytes of data on success.
func (c *client) simpleReply(n int) reply {
	c.t.Helper()
	var h [simpleHdrSize]byte
	c.read(h[:])
	if m := binary.BigEndian.Uint32(h[0:]); m != simpleMagic {
		c.t.Fatalf("simple reply magic %#x", m)
	}
	r := reply{errno: binary.BigEndian.Uint32(h[4:]), handle: binary.BigEndian.Uint64(h[8:])}
	if r.errno == 0 && n > 0 {
		r.data = make([]byte, n)
		c.read(r.data)
	}
	return r
}

// structuredReply reads one reply; a simple reply is accepted too. base
// and n describe the READ it answers, if any.
func (c *client) structuredReply(base uint64, n int) reply {
	c.t.Helper()
	var r reply
	for {
		var m [4]byte
		c.read(m[:])
		if binary.BigEndian.Uint32(m[:]) == simpleMagic {
			var rest [12]byte
			c.read(rest[:])
			r.errno, r.handle = binary.BigEndian.Uint32(rest[0:]), binary.BigEndian.Uint64(rest[4:])
			return r
		}
		if binary.BigEndian.Uint32(m[:]) != structuredMagic {
			c.t.Fatalf("reply magic % x", m)
		}
		var h [16]byte
		c.read(h[:])
		flags, typ := binary.BigEndian.Uint16(h[0:]), binary.BigEndian.Uint16(h[2:])
		r.handle = binary.BigEndian.Uint64(h[4:])
		p := make([]byte, binary.BigEndian.Uint32(h[12:]))
		c.read(p)
		r.chunks++
		if r.data == nil && n > 0 {
			r.data = make([]byte, n)
		}
		switch typ {
		case replyOffsetData:
			off := binary.BigEndian.Uint64(p) - base
			copy(r.data[off:], p[8:])
		case replyOffsetHole:
			r.holes++
		case replyBlockStatus:
			r.status = p
		case replyError:
			r.errno = binary.BigEndian.Uint32(p)
		case replyNone:
		default:
			c.t.Fatalf("chunk type %d", typ)
		}
		if flags&replyFlagDone != 0 {
			return r
		}
	}
}

// expectClosed checks the server hung up.
func (c *client) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1024)
	for {
		_, err := c.br.Read(buf)
		if err == io.EOF {
			return
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				c.t.Fatalf("server did not close the connection")
			}
			return // reset counts as closed
		}
	}
}

func tlsDial(t testing.TB, c *client, cfg *tls.Config) {
	t.Helper()
	if r := c.option(optStartTLS, nil); r[0].typ != repAck {
		t.Fatalf("STARTTLS: %#x %q", r[0].typ, r[0].data)
	}
	tc := tls.Client(c.nc, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.nc, c.br = tc, bufio.NewReader(tc)
}
