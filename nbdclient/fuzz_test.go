package nbdclient

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzReplies feeds arbitrary server bytes to the reply reader with three
// requests in flight (two READs, a BLOCK_STATUS): it must never panic,
// hang, write outside a READ's buffer, or leave a request unended.
func FuzzReplies(f *testing.F) {
	f.Add(cat(
		dataChunk(0, 1, 4096, bytes.Repeat([]byte{1}, 4096)), holeChunk(replyFlagDone, 1, 8192, 4096),
		chunkBytes(replyFlagDone, replyBlockStatus, 2, cat(be32(1), be32(1<<19), be32(3), be32(1<<19), be32(0))),
		cat(be32(simpleMagic), be32(0), be64(3), make([]byte, 512)),
	))
	f.Add(cat(
		chunkBytes(0, replyError, 1, cat(be32(5), be16(2), []byte("io"))), chunkBytes(replyFlagDone, replyNone, 1, nil),
		chunkBytes(replyFlagDone, replyErrorOffset, 2, cat(be32(22), be16(0), be64(9))),
		dataChunk(replyFlagDone, 3, 0, make([]byte, 512)),
	))
	f.Add(cat(holeChunk(0, 1, 12288, 12), dataChunk(0, 1, 4096, make([]byte, 100)), dataChunk(replyFlagDone, 1, 4196, make([]byte, 8092))))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		defer b.Close()
		c := newConn(a, bufio.NewReader(bytes.NewReader(in)), plainInfo, Options{})
		guarded := bytes.Repeat([]byte{0xee}, 8192+32)
		calls := []*call{
			{cmd: cmdRead, off: 4096, n: 8192, buf: guarded[16 : 16+8192]},
			{cmd: cmdBlockStatus, off: 0, n: 1 << 20, status: map[uint32][]Extent{}},
			{cmd: cmdRead, off: 0, n: 512, buf: make([]byte, 512)},
		}
		for i, cl := range calls {
			cl.done = make(chan struct{})
			c.calls[uint64(i+1)] = cl
		}
		finished := make(chan struct{})
		go func() {
			c.readReplies()
			close(finished)
		}()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Fatal("the reply reader did not end at the end of its input")
		}
		for i, cl := range calls {
			select {
			case <-cl.done:
			default:
				t.Fatalf("request %d left in flight", i+1)
			}
		}
		if !bytes.Equal(guarded[:16], bytes.Repeat([]byte{0xee}, 16)) || !bytes.Equal(guarded[16+8192:], bytes.Repeat([]byte{0xee}, 16)) {
			t.Fatal("a reply was written outside its buffer")
		}
	})
}

// FuzzHandshake feeds arbitrary server bytes to negotiation: it must end
// with an error or an Info, never panic or hang.
func FuzzHandshake(f *testing.F) {
	greeting := cat(be64(nbdMagic), be64(optMagic), be16(flagFixedNewstyle|flagNoZeroes))
	reply := func(opt, typ uint32, data []byte) []byte {
		return cat(be64(optReplyMagic), be32(opt), be32(typ), be32(uint32(len(data))), data)
	}
	f.Add(cat(greeting, reply(optStructuredReply, repAck, nil),
		reply(optSetMetaContext, repMetaContext, cat(be32(1), []byte("base:allocation"))), reply(optSetMetaContext, repAck, nil),
		reply(optGo, repInfo, cat(be16(infoExport), be64(1<<20), be16(1))), reply(optGo, repInfo, cat(be16(infoDescription), []byte("d"))),
		reply(optGo, repInfo, cat(be16(infoBlockSize), be32(1), be32(4096), be32(1<<20))), reply(optGo, repAck, nil)))
	f.Add(cat(greeting, reply(optStructuredReply, repErrUnsup, nil), reply(optGo, repErrUnsup, nil), be64(1<<20), be16(1)))
	f.Add(cat(greeting, reply(optStartTLS, repAck, nil), reply(optStructuredReply, repAck, nil),
		reply(optGo, repInfo, cat(be16(infoExport), be64(1<<20), be16(1))), reply(optGo, repAck, nil)))
	f.Add(cat(greeting, reply(optStartTLS, repErrPolicy, []byte("no TLS here"))))
	f.Fuzz(func(t *testing.T, in []byte) {
		// Once in plaintext, once as over nbds: there the bytes after the
		// STARTTLS reply stand for what the TLS session carries.
		for _, tlsOn := range []bool{false, true} {
			stream := bytes.NewReader(in)
			n := &negotiator{rw: struct {
				io.Reader
				io.Writer
			}{stream, io.Discard}, export: "disk", contexts: []string{"base:allocation", "vhdkit:changed"}}
			upgraded := false
			if tlsOn {
				n.upgrade = func() (io.ReadWriter, error) {
					upgraded = true
					return n.rw, nil
				}
			}
			info, err := n.negotiate()
			if err == nil && (info.Size < 0 || len(info.Contexts) > 2) {
				t.Fatalf("accepted %+v", info)
			}
			if err == nil && tlsOn && !upgraded {
				t.Fatal("an nbds negotiation ended without TLS")
			}
		}
	})
}

// FuzzParseURI: any string is parsed or refused, never a panic; a URI
// parsed is dialable (a network and an address), keeps nbds as TLS,
// and reads back the same from its String.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"nbd://h/e", "nbds://127.0.0.1:1234/disk?tls-certificates=/etc/pki",
		"nbds+unix:///a%20b?socket=/run/s.sock&tls-certificates=d", "nbd+unix:///?socket=s", "nbds://[::1]/x", "nbd://h:p/e",
		"nbd+unix:///d?socket=s&tls-certificates=d", "nbds://h/e?tls-certificates=a&tls-certificates=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a two-line error: %v", err)
			}
			return
		}
		if (u.Network != "unix" && u.Network != "tcp") || u.Address == "" || u.Host == "" {
			t.Fatalf("%q parsed as %+v", s, u)
		}
		if u.TLS != strings.HasPrefix(strings.ToLower(s), "nbds") || (u.CertDir != "" && !u.TLS) {
			t.Fatalf("%q: TLS %v, certificates %q", s, u.TLS, u.CertDir)
		}
		again, err := ParseURI(u.String())
		if err != nil {
			t.Fatalf("%q -> %q: %v", s, u.String(), err)
		}
		if *again != *u {
			t.Fatalf("%q -> %q: %+v, then %+v", s, u.String(), u, again)
		}
	})
}
