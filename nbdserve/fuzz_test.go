package nbdserve

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzConn feeds arbitrary client bytes to one connection: negotiation
// and transmission must never panic, hang or allocate beyond the limits,
// whatever arrives. Seeds are well-formed sessions to mutate from.
func FuzzConn(f *testing.F) {
	hello := be32(clientFixedNewstyle | clientNoZeroes)
	opt := func(o uint32, data []byte) []byte {
		return cat(be64(optMagic), be32(o), be32(uint32(len(data))), data)
	}
	req := func(flags, typ uint16, off uint64, n uint32, data []byte) []byte {
		return cat(be32(requestMagic), be16(flags), be16(typ), be64(7), be64(off), be32(n), data)
	}
	structured := cat(hello, opt(optStructuredReply, nil), opt(optSetMetaContext, metaData("d", metaBaseAllocation)), opt(optGo, goData("d", infoBlockSize)))
	f.Add(cat(hello, opt(optList, nil), opt(optInfo, goData("")), opt(optAbort, nil)))
	f.Add(cat(hello, opt(optExportName, nil), req(0, cmdWrite, 512, 4, []byte("abcd")), req(0, cmdRead, 0, 4096, nil), req(0, cmdFlush, 0, 0, nil), req(0, cmdDisc, 0, 0, nil)))
	f.Add(cat(structured, req(0, cmdRead, 0, 8192, nil), req(cmdFlagReqOne, cmdBlockStatus, 0, 1<<20, nil),
		req(cmdFlagFastZero, cmdWriteZeroes, 0, 4096, nil), req(0, cmdTrim, 4096, 4096, nil), req(cmdFlagDF, cmdRead, 1, 100, nil),
		req(0, cmdCache, 0, 512, nil), req(0, 99, 0, 0, nil)))
	f.Add(cat(structured, req(0, cmdWrite, 0, 1<<30, nil)))
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := oneExport(newMemDisk(1 << 20))
		srv.HandshakeTimeout = 2 * time.Second
		client, server := net.Pipe()
		c := newConn(srv, &listener{}, server)
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.serve(context.Background())
		}()
		go io.Copy(io.Discard, client)
		client.SetDeadline(time.Now().Add(5 * time.Second))
		client.Write(in)
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("connection did not end after the client closed")
		}
	})
}
