package nbdclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Servers that break the protocol, scripted byte by byte: each reply is
// checked against its request before anything is read or allocated, and
// a violation ends the connection with ErrProtocol, never a panic, a
// hang or a write outside the caller's buffer.

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

func chunkBytes(flags, typ uint16, handle uint64, payload []byte) []byte {
	return cat(be32(structuredMagic), be16(flags), be16(typ), be64(handle), be32(uint32(len(payload))), payload)
}

func dataChunk(flags uint16, h, off uint64, data []byte) []byte {
	return chunkBytes(flags, replyOffsetData, h, cat(be64(off), data))
}

func holeChunk(flags uint16, h, off uint64, n uint32) []byte {
	return chunkBytes(flags, replyOffsetHole, h, cat(be64(off), be32(n)))
}

// scripted serves one connection: for each request it reads, reply
// returns the bytes to send (nil: send nothing).
func scripted(t *testing.T, info Info, reply func(handle, off uint64, n uint32) []byte) *Conn {
	t.Helper()
	srvSide, cliSide := net.Pipe()
	t.Cleanup(func() { srvSide.Close() })
	go func() {
		var req [requestSize]byte
		for {
			if _, err := io.ReadFull(srvSide, req[:]); err != nil {
				return
			}
			if binary.BigEndian.Uint16(req[6:]) == cmdDisc {
				return
			}
			b := reply(binary.BigEndian.Uint64(req[8:]), binary.BigEndian.Uint64(req[16:]), binary.BigEndian.Uint32(req[24:]))
			if _, err := srvSide.Write(b); err != nil {
				return
			}
		}
	}()
	c := newConn(cliSide, newReader(cliSide), info, Options{StallTimeout: 5 * time.Second})
	go c.readReplies()
	t.Cleanup(func() { c.Close() })
	return c
}

var plainInfo = Info{Size: 1 << 20, MaxBlock: 1 << 20, Structured: true, Contexts: map[string]uint32{"base:allocation": 1}}

func TestHostileReadReplies(t *testing.T) {
	cases := []struct {
		name  string
		reply func(h, off uint64, n uint32) []byte
		want  error // nil: success
	}{
		{"data and a hole", func(h, off uint64, n uint32) []byte {
			return cat(dataChunk(0, h, off, bytes.Repeat([]byte{7}, 512)), holeChunk(replyFlagDone, h, off+512, n-512))
		}, nil},
		{"reply to another handle", func(h, off uint64, n uint32) []byte {
			return dataChunk(replyFlagDone, h+1, off, make([]byte, n))
		}, ErrProtocol},
		{"chunks overlap", func(h, off uint64, n uint32) []byte {
			return cat(dataChunk(0, h, off, make([]byte, n)), dataChunk(replyFlagDone, h, off, make([]byte, 512)))
		}, ErrProtocol},
		{"data before the request", func(h, off uint64, n uint32) []byte {
			return dataChunk(replyFlagDone, h, off-512, make([]byte, n))
		}, ErrProtocol},
		{"data past the request", func(h, off uint64, n uint32) []byte {
			return dataChunk(replyFlagDone, h, off+512, make([]byte, n))
		}, ErrProtocol},
		{"a hole past the request", func(h, off uint64, n uint32) []byte {
			return holeChunk(replyFlagDone, h, off, n+1)
		}, ErrProtocol},
		{"done without covering", func(h, off uint64, n uint32) []byte {
			return dataChunk(replyFlagDone, h, off, make([]byte, 512))
		}, ErrProtocol},
		{"a data chunk claiming 4 GiB", func(h, off uint64, n uint32) []byte {
			return cat(be32(structuredMagic), be16(replyFlagDone), be16(replyOffsetData), be64(h), be32(0xffffffff))
		}, ErrProtocol},
		{"block status for a read", func(h, off uint64, n uint32) []byte {
			return chunkBytes(replyFlagDone, replyBlockStatus, h, cat(be32(1), be32(n), be32(0)))
		}, ErrProtocol},
		{"unknown chunk type", func(h, off uint64, n uint32) []byte {
			return chunkBytes(replyFlagDone, 77, h, nil)
		}, ErrProtocol},
		{"bad reply magic", func(h, off uint64, n uint32) []byte {
			return cat(be32(0xdeadbeef), make([]byte, 16))
		}, ErrProtocol},
		{"error chunk", func(h, off uint64, n uint32) []byte {
			return chunkBytes(replyFlagDone, replyError, h, cat(be32(5), be16(7), []byte("bad\nday")))
		}, &ServerError{}},
		{"error chunk with a short message field", func(h, off uint64, n uint32) []byte {
			return chunkBytes(replyFlagDone, replyError, h, cat(be32(5), be16(700), []byte("x")))
		}, ErrProtocol},
		{"error chunk with errno 0", func(h, off uint64, n uint32) []byte {
			return chunkBytes(replyFlagDone, replyError, h, cat(be32(0), be16(0)))
		}, ErrProtocol},
		{"simple error", func(h, off uint64, n uint32) []byte {
			return cat(be32(simpleMagic), be32(22), be64(h))
		}, &ServerError{}},
		{"closed mid-data", func(h, off uint64, n uint32) []byte {
			return cat(be32(structuredMagic), be16(replyFlagDone), be16(replyOffsetData), be64(h), be32(n+8), be64(off), make([]byte, 100))
		}, errClosedMid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := scripted(t, plainInfo, tc.reply)
			buf := bytes.Repeat([]byte{0xee}, 8192+16)
			err := readCheck(t, c, buf[8:8+8192], 4096)
			if !bytes.Equal(buf[:8], bytes.Repeat([]byte{0xee}, 8)) || !bytes.Equal(buf[8+8192:], bytes.Repeat([]byte{0xee}, 8)) {
				t.Fatal("the reply was written outside the caller's buffer")
			}
			checkErr(t, err, tc.want)
			if tc.want == nil && (buf[8] != 7 || buf[8+600] != 0) {
				t.Error("data or hole not where the chunks put them")
			}
		})
	}
}

// errClosedMid stands for "an error, not a protocol violation".
var errClosedMid = errors.New("closed")

func checkErr(t *testing.T, err, want error) {
	t.Helper()
	var se *ServerError
	switch {
	case want == nil:
		if err != nil {
			t.Errorf("err %v, want success", err)
		}
	case errors.Is(want, ErrProtocol):
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("err %v, want a protocol error", err)
		}
	case errors.As(want, &se):
		if !errors.As(err, &se) || strings.ContainsAny(se.Message, "\n") {
			t.Errorf("err %v, want a one-line server error", err)
		}
	default:
		if err == nil || errors.Is(err, ErrProtocol) {
			t.Errorf("err %v, want an error that is not a protocol error", err)
		}
	}
}

// readCheck reads at off with a deadline: a hang is a failure.
func readCheck(t *testing.T, c *Conn, p []byte, off int64) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.ReadAt(context.Background(), p, off) }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("the read hung")
		return nil
	}
}

func TestHostileStatusReplies(t *testing.T) {
	cases := []struct {
		name  string
		reply func(h, off uint64, n uint32) []byte
		want  error
	}{
		{"one descriptor", func(h, off uint64, n uint32) []byte {
			return chunkBytes(replyFlagDone, replyBlockStatus, h, cat(be32(1), be32(n), be32(3)))
		}, nil},
		{"a context not selected", func(h, off uint64, n uint32) []byte {
			return chunkBytes(replyFlagDone, replyBlockStatus, h, cat(be32(9), be32(n), be32(3)))
		}, ErrProtocol},
		{"the context twice", func(h, off uint64, n uint32) []byte {
			c := cat(be32(1), be32(n), be32(3))
			return cat(chunkBytes(0, replyBlockStatus, h, c), chunkBytes(replyFlagDone, replyBlockStatus, h, c))
		}, ErrProtocol},
		{"no chunk for the context", func(h, off uint64, n uint32) []byte {
			return chunkBytes(replyFlagDone, replyNone, h, nil)
		}, ErrProtocol},
		{"a zero-length descriptor", func(h, off uint64, n uint32) []byte {
			return chunkBytes(replyFlagDone, replyBlockStatus, h, cat(be32(1), be32(0), be32(3)))
		}, ErrProtocol},
		{"a ragged payload", func(h, off uint64, n uint32) []byte {
			return chunkBytes(replyFlagDone, replyBlockStatus, h, cat(be32(1), be32(n), be32(3), be16(1)))
		}, ErrProtocol},
		{"a payload over the limit", func(h, off uint64, n uint32) []byte {
			return cat(be32(structuredMagic), be16(replyFlagDone), be16(replyBlockStatus), be64(h), be32(MaxStatusPayload+8))
		}, ErrProtocol},
		{"a simple success", func(h, off uint64, n uint32) []byte {
			return cat(be32(simpleMagic), be32(0), be64(h))
		}, ErrProtocol},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := scripted(t, plainInfo, tc.reply)
			st, err := c.BlockStatus(context.Background(), 0, 1<<20)
			checkErr(t, err, tc.want)
			if tc.want == nil && !sameExtents(st["base:allocation"], []Extent{{1 << 20, 3}}) {
				t.Errorf("status %v", st)
			}
		})
	}
}

// TestHostileHandshakes: greetings and option replies a client must not
// take, each refused with a clear error.
func TestHostileHandshakes(t *testing.T) {
	greeting := cat(be64(nbdMagic), be64(optMagic), be16(flagFixedNewstyle|flagNoZeroes))
	optReply := func(opt, typ uint32, data []byte) []byte {
		return cat(be64(optReplyMagic), be32(opt), be32(typ), be32(uint32(len(data))), data)
	}
	ack := func(opt uint32) []byte { return optReply(opt, repAck, nil) }
	export := optReply(optGo, repInfo, cat(be16(infoExport), be64(1<<20), be16(tflagHasFlags)))
	cases := []struct {
		name   string
		server []byte
		want   string
	}{
		{"not NBD", []byte("SSH-2.0-OpenSSH_9.2\r\n"), "not an NBD server"},
		{"oldstyle", cat(be64(nbdMagic), be64(oldstyleMagic), make([]byte, 8)), "oldstyle"},
		{"not fixed newstyle", cat(be64(nbdMagic), be64(optMagic), be16(0)), "fixed newstyle"},
		{"a huge option reply", cat(greeting, be64(optReplyMagic), be32(optStructuredReply), be32(repAck), be32(1<<30)), "option reply of"},
		{"a reply to another option", cat(greeting, ack(optGo)), "while waiting"},
		{"unknown export", cat(greeting, ack(optStructuredReply), optReply(optGo, repErrUnknown, []byte("nope"))), "no such export"},
		{"TLS required", cat(greeting, optReply(optStructuredReply, repErrTLSReqd, nil), optReply(optGo, repErrTLSReqd, nil)), "requires TLS"},
		{"GO without the export info", cat(greeting, ack(optStructuredReply), ack(optGo)), "without NBD_INFO_EXPORT"},
		{"a short export info", cat(greeting, ack(optStructuredReply), optReply(optGo, repInfo, cat(be16(infoExport), be64(1)))), "NBD_INFO_EXPORT of"},
		{"a huge size", cat(greeting, ack(optStructuredReply), optReply(optGo, repInfo, cat(be16(infoExport), be64(1<<63), be16(1)))), "export size"},
		{"closed", greeting, "reading an option reply"},
		{"fine", cat(greeting, ack(optStructuredReply), export, ack(optGo)), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srvSide, cliSide := net.Pipe()
			defer cliSide.Close()
			go func() {
				go io.Copy(io.Discard, srvSide)
				srvSide.Write(tc.server)
				time.Sleep(100 * time.Millisecond)
				srvSide.Close()
			}()
			cliSide.SetDeadline(time.Now().Add(10 * time.Second))
			n := &negotiator{rw: cliSide, export: "disk"}
			info, err := n.negotiate()
			switch {
			case tc.want == "" && (err != nil || info.Size != 1<<20):
				t.Errorf("negotiate: %v %+v", err, info)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("negotiate: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
