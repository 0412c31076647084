package nbdserve

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"vhdkit/engine"
)

// memDisk is an in-memory Disk with hooks for failure injection.
type memDisk struct {
	mu       sync.Mutex
	data     []byte
	readOnly bool
	flushes  atomic.Int64
	// onRead, onWrite run before the operation; a non-nil error fails it.
	onRead  func(off int64) error
	onWrite func(off int64) error
	extents func(off, n int64) []engine.Extent
}

func newMemDisk(size int) *memDisk { return &memDisk{data: make([]byte, size)} }

func (m *memDisk) Size() int64 { return int64(len(m.data)) }
func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	if m.onRead != nil {
		if err := m.onRead(off); err != nil {
			return 0, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if m.onWrite != nil {
		if err := m.onWrite(off); err != nil {
			return 0, err
		}
	}
	if m.readOnly {
		return 0, engine.ErrReadOnly
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, engine.ErrOutOfRange
	}
	return copy(m.data[off:], p), nil
}
func (m *memDisk) Flush() error { m.flushes.Add(1); return nil }
func (m *memDisk) Zero(off, n int64, _ engine.ZeroMode) error {
	_, err := m.WriteAt(make([]byte, n), off)
	return err
}
func (m *memDisk) Trim(off, n int64) error { return m.Zero(off, n, engine.ZeroMayDeallocate) }
func (m *memDisk) Extents(off, n int64) ([]engine.Extent, error) {
	if m.extents != nil {
		return m.extents(off, n), nil
	}
	return []engine.Extent{{Off: off, Len: n, State: engine.ExtentData}}, nil
}
func (m *memDisk) ReadOnly() bool { return m.readOnly }
func (m *memDisk) Close() error   { return nil }

func TestGarbageDisconnectsOnlyThatClient(t *testing.T) {
	d := newMemDisk(1 << 20)
	path, _ := testServer(t, oneExport(d))
	good := dial(t, path)
	good.open("d", true)

	bad := dial(t, path)
	bad.open("d", true)
	bad.write(bytes.Repeat([]byte{0xde, 0xad}, 14))
	bad.expectClosed()

	// A huge option is refused before its data is read.
	big := dial(t, path)
	big.write(be64(optMagic), be32(optInfo), be32(1<<30))
	big.expectClosed()

	// Bad option magic.
	bm := dial(t, path)
	bm.write(be64(0x1122334455667788), be32(optList), be32(0))
	bm.expectClosed()

	good.request(0, cmdWrite, 1, 4096, 4, []byte("abcd"))
	if r := good.structuredReply(0, 0); r.errno != 0 || r.handle != 1 {
		t.Fatalf("write after others' garbage: %+v", r)
	}
	good.request(0, cmdRead, 2, 4096, 4, nil)
	if r := good.structuredReply(4096, 4); r.errno != 0 || string(r.data) != "abcd" {
		t.Fatalf("read: %+v", r)
	}
}

func TestNegotiationErrors(t *testing.T) {
	path, _ := testServer(t, oneExport(newMemDisk(1<<20)))
	c := dial(t, path)
	if r := c.option(99, []byte("xyz")); r[0].typ != repErrUnsup {
		t.Errorf("unknown option: %#x", r[0].typ)
	}
	if r := c.option(optGo, goData("nope")); r[0].typ != repErrUnknown {
		t.Errorf("unknown export: %#x", r[0].typ)
	}
	if r := c.option(optGo, []byte{0, 0, 0, 9, 'a'}); r[0].typ != repErrInvalid {
		t.Errorf("short GO: %#x", r[0].typ)
	}
	if r := c.option(optList, []byte("x")); r[0].typ != repErrInvalid {
		t.Errorf("LIST with data: %#x", r[0].typ)
	}
	if r := c.option(optSetMetaContext, metaData("d", metaBaseAllocation)); r[0].typ != repErrInvalid {
		t.Errorf("meta context before structured replies: %#x", r[0].typ)
	}
	if r := c.option(optStartTLS, nil); r[0].typ != repErrUnsup {
		t.Errorf("STARTTLS without TLS: %#x", r[0].typ)
	}
	r := c.option(optList, nil)
	if len(r) != 2 || r[0].typ != repServer || string(r[0].data[4:]) != "d" {
		t.Errorf("LIST: %+v", r)
	}
	c.option(optStructuredReply, nil)
	r = c.option(optListMetaContext, metaData("d"))
	if len(r) != 2 || r[0].typ != repMetaContext || string(r[0].data[4:]) != metaBaseAllocation {
		t.Errorf("LIST_META_CONTEXT: %+v", r)
	}
	r = c.option(optSetMetaContext, metaData("d", "qemu:dirty-bitmap:x", "base:"))
	if len(r) != 1 || r[0].typ != repAck {
		t.Errorf("SET_META_CONTEXT with nothing to select: %+v", r)
	}
	r = c.option(optInfo, goData("", infoName, infoDescription, infoBlockSize))
	var got []string
	for _, x := range r {
		if x.typ == repInfo {
			switch binary.BigEndian.Uint16(x.data) {
			case infoName, infoDescription:
				got = append(got, string(x.data[2:]))
			case infoBlockSize:
				got = append(got, fmt.Sprint(binary.BigEndian.Uint32(x.data[10:])))
			}
		}
	}
	if fmt.Sprint(got) != "[d test disk 33554432]" || r[len(r)-1].typ != repAck {
		t.Errorf("INFO: %q", got)
	}
	// EXPORT_NAME with an unknown name cannot be answered: hang up.
	c.write(be64(optMagic), be32(optExportName), be32(4), []byte("nope"))
	c.expectClosed()

	// EXPORT_NAME with the default export works.
	c2 := dial(t, path)
	c2.write(be64(optMagic), be32(optExportName), be32(0))
	var b [10]byte
	c2.read(b[:])
	if binary.BigEndian.Uint64(b[:]) != 1<<20 {
		t.Errorf("EXPORT_NAME size %d", binary.BigEndian.Uint64(b[:]))
	}
	c2.request(0, cmdFlush, 7, 0, 0, nil)
	if r := c2.simpleReply(0); r.errno != 0 || r.handle != 7 {
		t.Errorf("flush: %+v", r)
	}
}

func TestCommandErrors(t *testing.T) {
	d := newMemDisk(1 << 20)
	full := newMemDisk(1 << 20)
	full.onWrite = func(off int64) error {
		return fmt.Errorf("write at %d: %w", off, syscall.ENOSPC)
	}
	ro := newMemDisk(1 << 20)
	ro.readOnly = true
	srv := &Server{Exports: map[string]*Export{
		"d":    {Name: "d", Disk: d},
		"full": {Name: "full", Disk: full},
		"ro":   {Name: "ro", Disk: ro},
	}}
	path, _ := testServer(t, srv)
	for _, structured := range []bool{false, true} {
		c := dial(t, path)
		c.open("d", structured)
		get := func(base uint64, n int) reply {
			if structured {
				return c.structuredReply(base, n)
			}
			return c.simpleReply(n)
		}
		cases := []struct {
			name         string
			flags, typ   uint16
			off          uint64
			length       uint32
			data         []byte
			want         uint32
			readDataSize int
		}{
			{"read past end", 0, cmdRead, 1<<20 - 512, 1024, nil, errInval, 0},
			{"read offset overflow", 0, cmdRead, 1<<64 - 512, 1024, nil, errInval, 0},
			{"write past end", 0, cmdWrite, 1 << 20, 4, []byte("abcd"), errNoSpc, 0},
			{"trim past end", 0, cmdTrim, 1 << 20, 1, nil, errInval, 0},
			{"zero past end", 0, cmdWriteZeroes, 1<<20 - 1, 2, nil, errNoSpc, 0},
			{"cache past end", 0, cmdCache, 1 << 20, 1, nil, errInval, 0},
			{"unknown command", 0, 42, 0, 0, nil, errInval, 0},
			{"unknown flag", 1 << 9, cmdFlush, 0, 0, nil, errInval, 0},
			{"flag for another command", cmdFlagNoHole, cmdWrite, 0, 1, []byte("x"), errInval, 0},
			{"oversize read", 0, cmdRead, 0, 64 << 20, nil, errInval, 0},
			{"oversize write", 0, cmdWrite, 0, 32<<20 + 1, make([]byte, 32<<20+1), errInval, 0},
			{"block status without context", 0, cmdBlockStatus, 0, 512, nil, map[bool]uint32{false: errInval, true: 0}[structured], 0},
			{"zero-length block status", 0, cmdBlockStatus, 0, 0, nil, errInval, 0},
			{"zero-length read", 0, cmdRead, 100, 0, nil, 0, 0},
			{"zero-length write", 0, cmdWrite, 100, 0, nil, 0, 0},
			{"unaligned write", 0, cmdWrite, 3, 5, []byte("hello"), 0, 0},
			{"unaligned read", 0, cmdRead, 3, 5, nil, 0, 5},
			{"write at end, empty", 0, cmdWrite, 1 << 20, 0, nil, 0, 0},
		}
		if !structured {
			cases = append(cases, struct {
				name         string
				flags, typ   uint16
				off          uint64
				length       uint32
				data         []byte
				want         uint32
				readDataSize int
			}{"DF without structured replies", cmdFlagDF, cmdRead, 0, 512, nil, errInval, 0})
		}
		for i, tc := range cases {
			c.request(tc.flags, tc.typ, uint64(i+100), tc.off, tc.length, tc.data)
			r := get(tc.off, tc.readDataSize)
			if r.errno != tc.want || r.handle != uint64(i+100) {
				t.Errorf("structured=%v %s: errno %d handle %d, want errno %d", structured, tc.name, r.errno, r.handle, tc.want)
			}
			if tc.readDataSize > 0 && string(r.data) != "hello" {
				t.Errorf("%s: read %q", tc.name, r.data)
			}
		}
	}
	// Read-only export: EPERM for every write.
	c := dial(t, path)
	c.open("ro", true)
	if c.flags&tflagReadOnly == 0 || c.flags&(tflagSendTrim|tflagSendWriteZeroes|tflagSendFUA) != 0 {
		t.Errorf("read-only flags %#x", c.flags)
	}
	for i, typ := range []uint16{cmdWrite, cmdTrim, cmdWriteZeroes} {
		var data []byte
		if typ == cmdWrite {
			data = []byte("abcd")
		}
		c.request(0, typ, uint64(i), 0, 4, data)
		if r := c.structuredReply(0, 0); r.errno != errPerm {
			t.Errorf("%s on read-only export: errno %d", cmdName(typ), r.errno)
		}
	}
	// A full host disk: ENOSPC.
	c = dial(t, path)
	c.open("full", false)
	c.request(0, cmdWrite, 1, 0, 4, []byte("abcd"))
	if r := c.simpleReply(0); r.errno != errNoSpc {
		t.Errorf("write to a full disk: errno %d", r.errno)
	}
}

func TestPanicBecomesEIO(t *testing.T) {
	d := newMemDisk(1 << 20)
	d.onRead = func(off int64) error {
		if off == 4096 {
			panic("disk bug")
		}
		return nil
	}
	path, _ := testServer(t, oneExport(d))
	for _, structured := range []bool{false, true} {
		c := dial(t, path)
		c.open("d", structured)
		c.request(0, cmdRead, 1, 4096, 512, nil)
		var r reply
		if structured {
			r = c.structuredReply(4096, 512)
		} else {
			r = c.simpleReply(512)
		}
		if r.errno != errIO {
			t.Fatalf("panic: errno %d", r.errno)
		}
		c.request(0, cmdRead, 2, 0, 512, nil)
		if structured {
			r = c.structuredReply(0, 512)
		} else {
			r = c.simpleReply(512)
		}
		if r.errno != 0 || r.handle != 2 {
			t.Fatalf("read after panic: %+v", r)
		}
	}
}

// TestOutOfOrderReplies: of two pipelined reads, the one the disk
// blocks is overtaken by the other. Repeated, because the way it once
// failed was a race: both requests were handed to the same worker before
// it woke, and the second waited behind the first for good (dispatch).
func TestOutOfOrderReplies(t *testing.T) {
	for i := range 300 {
		if !t.Run(fmt.Sprint(i), outOfOrderReplies) {
			return
		}
	}
}

func outOfOrderReplies(t *testing.T) {
	d := newMemDisk(64 << 10)
	release := make(chan struct{})
	d.onRead = func(off int64) error {
		if off == 0 {
			<-release
		}
		return nil
	}
	path, _ := testServer(t, oneExport(d))
	c := dial(t, path)
	c.open("d", true)
	// Both requests in one write, as a pipelining client sends them: the
	// first blocks in the disk, the second is answered meanwhile. (A lone
	// request on an idle connection runs in the reader, see inline.)
	c.write(cat(be32(requestMagic), be16(0), be16(cmdRead), be64(1), be64(0), be32(4096),
		be32(requestMagic), be16(0), be16(cmdRead), be64(2), be64(8192), be32(4096)))
	r := c.structuredReply(8192, 4096)
	close(release)
	if r.handle != 2 {
		t.Fatalf("first reply is for handle %d, want 2", r.handle)
	}
	if r := c.structuredReply(0, 4096); r.handle != 1 || r.errno != 0 {
		t.Fatalf("second reply: %+v", r)
	}
}

func TestManyConcurrentRequests(t *testing.T) {
	d := newMemDisk(8 << 20)
	path, _ := testServer(t, oneExport(d))
	var wg sync.WaitGroup
	for conn := 0; conn < 4; conn++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, path)
			c.open("d", true)
			const n = 200
			base := uint64(conn) << 21
			go func() {
				for i := 0; i < n; i++ {
					c.request(0, cmdWrite, uint64(i), base+uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i)}, 4096))
				}
			}()
			seen := map[uint64]bool{}
			for i := 0; i < n; i++ {
				r := c.structuredReply(0, 0)
				if r.errno != 0 || seen[r.handle] {
					t.Errorf("reply %+v", r)
				}
				seen[r.handle] = true
			}
			for i := 0; i < n; i++ {
				c.request(0, cmdRead, uint64(i), base+uint64(i)*4096, 4096, nil)
			}
			for i := 0; i < n; i++ {
				r := c.structuredReply(base, 4096*n)
				if r.errno != 0 {
					t.Errorf("read errno %d", r.errno)
					continue
				}
				_ = r // data checked below, through the disk
			}
		}()
	}
	wg.Wait()
	d.mu.Lock() // the race detector cannot see the socket order the writes
	defer d.mu.Unlock()
	for conn := 0; conn < 4; conn++ {
		for i := 0; i < 200; i++ {
			off := conn<<21 + i*4096
			if !bytes.Equal(d.data[off:off+4096], bytes.Repeat([]byte{byte(i)}, 4096)) {
				t.Fatalf("conn %d block %d wrong", conn, i)
			}
		}
	}
}

func TestBlockStatusBounded(t *testing.T) {
	d := newMemDisk(64 << 20)
	// Alternate data and hole every sector: far more runs than a reply holds.
	d.extents = func(off, n int64) []engine.Extent {
		var out []engine.Extent
		for p := off; p < off+n; p += 512 {
			st := engine.ExtentData
			if (p/512)%2 == 1 {
				st = engine.ExtentHole
			}
			out = append(out, engine.Extent{Off: p, Len: 512, State: st})
		}
		return out
	}
	path, _ := testServer(t, oneExport(d))
	c := dial(t, path)
	c.open("d", true)
	c.request(0, cmdBlockStatus, 1, 0, 64<<20, nil)
	r := c.structuredReply(0, 0)
	if r.errno != 0 || (len(r.status)-4)/8 != maxDescriptors {
		t.Fatalf("block status: errno %d, %d descriptors", r.errno, (len(r.status)-4)/8)
	}
	if f := binary.BigEndian.Uint32(r.status[16:]); f != stateHole|stateZero {
		t.Errorf("second descriptor flags %d", f)
	}
	c.request(cmdFlagReqOne, cmdBlockStatus, 2, 512, 4096, nil)
	r = c.structuredReply(0, 0)
	if len(r.status) != 12 || binary.BigEndian.Uint32(r.status[4:]) != 512 {
		t.Fatalf("REQ_ONE: % x", r.status)
	}
	// A read of alternating sectors is sent as data (holes under 4 KiB).
	c.request(0, cmdRead, 3, 0, 1<<20, nil)
	if r := c.structuredReply(0, 1<<20); r.errno != 0 || r.holes != 0 || r.chunks != 1 {
		t.Fatalf("read: %+v", r)
	}
}

// TestSparseReadsAndStatusOnImage serves a real dynamic image and checks
// holes go out as hole chunks and block status matches the writes.
func TestSparseReadsAndStatusOnImage(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.vhd")
	img, err := engine.Create(p, engine.CreateOptions{Type: engine.TypeDynamic, Size: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	path, stop := testServer(t, oneExport(img))
	c := dial(t, path)
	c.open("d", true)
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	c.request(cmdFlagFUA, cmdWrite, 1, 4<<20, uint32(len(data)), data)
	if r := c.structuredReply(0, 0); r.errno != 0 {
		t.Fatalf("write: %d", r.errno)
	}
	c.request(0, cmdRead, 2, 4<<20-8192, 8192+uint32(len(data))+8192, nil)
	r := c.structuredReply(4<<20-8192, 8192+len(data)+8192)
	if r.errno != 0 || r.holes != 2 || !bytes.Equal(r.data[8192:8192+len(data)], data) {
		t.Fatalf("sparse read: errno %d holes %d chunks %d", r.errno, r.holes, r.chunks)
	}
	c.request(0, cmdBlockStatus, 3, 0, 64<<20, nil)
	r = c.structuredReply(0, 0)
	var got []string
	for i := 4; i < len(r.status); i += 8 {
		got = append(got, fmt.Sprintf("%d:%d", binary.BigEndian.Uint32(r.status[i:]), binary.BigEndian.Uint32(r.status[i+4:])))
	}
	want := fmt.Sprintf("[%d:3 %d:0 %d:3]", 4<<20, len(data), 60<<20-len(data))
	if fmt.Sprint(got) != want {
		t.Fatalf("block status %v, want %v", got, want)
	}
	// FAST_ZERO: whole blocks of holes or data are fast; an edge that
	// holds data is not; NO_HOLE never is.
	for i, tc := range []struct {
		flags   uint16
		off     uint64
		n       uint32
		want    uint32
		explain string
	}{
		{cmdFlagFastZero, 8 << 20, 4 << 20, 0, "whole blocks"},
		{cmdFlagFastZero, 4<<20 + 512, 4096, errNotSup, "inside data"},
		{cmdFlagFastZero | cmdFlagNoHole, 8 << 20, 4 << 20, errNotSup, "NO_HOLE"},
		{cmdFlagFastZero, 4 << 20, 2 << 20, 0, "the whole written block"},
	} {
		c.request(tc.flags, cmdWriteZeroes, uint64(10+i), tc.off, tc.n, nil)
		if r := c.structuredReply(0, 0); r.errno != tc.want {
			t.Errorf("fast zero %s: errno %d, want %d", tc.explain, r.errno, tc.want)
		}
	}
	c.request(cmdFlagReqOne, cmdBlockStatus, 20, 0, 64<<20, nil)
	if r := c.structuredReply(0, 0); len(r.status) != 12 || binary.BigEndian.Uint32(r.status[4:]) != 64<<20 {
		t.Fatalf("after zeroing the data: % x", r.status)
	}
	c.request(0, cmdDisc, 99, 0, 0, nil)
	c.expectClosed()
	stop()
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, p)
}

func checkClean(t testing.TB, path string) {
	t.Helper()
	rep, err := engine.CheckPath(path, engine.CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	for _, p := range rep.Problems {
		t.Errorf("check %s: %s", path, p)
	}
}

func TestShutdownDrainsAndFlushes(t *testing.T) {
	d := newMemDisk(1 << 20)
	inWrite := make(chan struct{})
	release := make(chan struct{})
	d.onWrite = func(off int64) error {
		if off == 0 {
			close(inWrite)
			<-release
		}
		return nil
	}
	path, stop := testServer(t, oneExport(d))
	c := dial(t, path)
	c.open("d", false)
	c.request(0, cmdWrite, 1, 0, 4, []byte("abcd"))
	<-inWrite
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	time.Sleep(50 * time.Millisecond)
	// New connections are refused once the listener is closed.
	if nc, err := net.Dial("unix", path); err == nil {
		nc.Close()
		t.Error("server still accepting during shutdown")
	}
	close(release)
	if r := c.simpleReply(0); r.errno != 0 || r.handle != 1 {
		t.Fatalf("in-flight write: %+v", r)
	}
	<-stopped
	c.expectClosed()
	if d.flushes.Load() == 0 {
		t.Error("no flush at shutdown")
	}
	if string(d.data[:4]) != "abcd" {
		t.Error("write lost")
	}
}

func TestTLSRequired(t *testing.T) {
	serverCfg, clientCfg := testTLS(t)
	srv := oneExport(newMemDisk(1 << 20))
	srv.TLSConfig = serverCfg
	path, _ := testServer(t, srv)
	c := dial(t, path)
	if r := c.option(optGo, goData("d")); r[0].typ != repErrTLSReqd {
		t.Fatalf("GO before TLS: %#x", r[0].typ)
	}
	tlsDial(t, c, clientCfg)
	if r := c.option(optStartTLS, nil); r[0].typ != repErrInvalid {
		t.Fatalf("second STARTTLS: %#x", r[0].typ)
	}
	c.open("d", true)
	c.request(0, cmdWrite, 1, 512, 3, []byte("tls"))
	if r := c.structuredReply(0, 0); r.errno != 0 {
		t.Fatal(r.errno)
	}
	c.request(0, cmdRead, 2, 512, 3, nil)
	if r := c.structuredReply(512, 3); string(r.data) != "tls" {
		t.Fatalf("read over TLS: %q", r.data)
	}
	// EXPORT_NAME without TLS must hang up.
	c2 := dial(t, path)
	c2.write(be64(optMagic), be32(optExportName), be32(0))
	c2.expectClosed()
}

// testTLS makes a throwaway CA-less self-signed server certificate.
func testTLS(t testing.TB) (server, client *tls.Config) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, ServerName: "localhost"}
}

func TestServeRejectsBadConfig(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := &Server{Exports: map[string]*Export{"a": {Name: "b", Disk: newMemDisk(512)}}}
	if err := srv.Serve(context.Background(), l); err == nil {
		t.Error("name mismatch accepted")
	}
	srv = &Server{Exports: map[string]*Export{"a": {Name: "a", Disk: newMemDisk(512)}}, Default: "x"}
	if err := srv.Serve(context.Background(), l); err == nil {
		t.Error("missing default accepted")
	}
}
