package nbdserve

import (
	"encoding/binary"
	"os/exec"
	"strings"
	"testing"

	"vhdkit/engine"
)

// changedDisk is a memDisk that lists fixed runs as changed.
type changedDisk struct {
	*memDisk
	runs []engine.Extent
}

func (d *changedDisk) ChangedExtents(off, n int64) ([]engine.Extent, error) {
	var out []engine.Extent
	for _, r := range d.runs {
		s, e := max(r.Off, off), min(r.Off+r.Len, off+n)
		if s < e {
			out = append(out, engine.Extent{Off: s, Len: e - s, State: r.State})
		}
	}
	return out, nil
}

var _ ChangeLister = (*changedDisk)(nil)

// The runs a 64 MiB changed disk lists: one straddles the 16 MiB status
// window, so a reply joins what two ChangedExtents calls return.
var testChanges = []engine.Extent{
	{Off: 4096, Len: 8192},
	{Off: 16<<20 - 512, Len: 1024, State: engine.ExtentZero},
	{Off: 40 << 20, Len: 2 << 20},
}

func changedServer(t *testing.T) (*client, *changedDisk) {
	d := &changedDisk{memDisk: newMemDisk(64 << 20), runs: testChanges}
	sock, _ := testServer(t, oneExport(d))
	return dial(t, sock), d
}

// descriptorsOf parses a BLOCK_STATUS payload: its context id and
// (length, flags) pairs.
func descriptorsOf(t *testing.T, p []byte) (uint32, [][2]uint32) {
	t.Helper()
	if len(p) < 12 || (len(p)-4)%8 != 0 {
		t.Fatalf("block status payload of %d bytes", len(p))
	}
	var ds [][2]uint32
	for i := 4; i < len(p); i += 8 {
		ds = append(ds, [2]uint32{binary.BigEndian.Uint32(p[i:]), binary.BigEndian.Uint32(p[i+4:])})
	}
	return binary.BigEndian.Uint32(p), ds
}

// TestChangedContextNegotiation: vhdkit:changed is listed (by name, by
// its namespace, with no query) and set only on an export whose disk
// lists changes, with the id BLOCK_STATUS chunks carry.
func TestChangedContextNegotiation(t *testing.T) {
	c, _ := changedServer(t)
	if r := c.option(optStructuredReply, nil); r[0].typ != repAck {
		t.Fatal("no structured replies")
	}
	for _, q := range [][]string{{"vhdkit:"}, {metaChangedName}, nil} {
		names := contextNames(c.option(optListMetaContext, metaData("d", q...)))
		if !strings.Contains(names, metaChangedName) {
			t.Errorf("LIST %q: %s", q, names)
		}
	}
	rs := c.option(optSetMetaContext, metaData("d", metaChangedName, metaBaseAllocation, "vhdkit:nonesuch"))
	if len(rs) != 3 {
		t.Fatalf("SET: %d replies, want two contexts and an ACK", len(rs))
	}
	ids := map[string]uint32{}
	for _, r := range rs[:2] {
		ids[string(r.data[4:])] = binary.BigEndian.Uint32(r.data)
	}
	if ids[metaChangedName] != metaChangedID || ids[metaBaseAllocation] != metaBaseAllocationID {
		t.Errorf("SET ids: %v", ids)
	}

	plain := dial(t, mustServe(t, oneExport(newMemDisk(1<<20))))
	plain.option(optStructuredReply, nil)
	if names := contextNames(plain.option(optListMetaContext, metaData("d"))); strings.Contains(names, "vhdkit") {
		t.Errorf("an export without changes lists %s", names)
	}
	if rs := plain.option(optSetMetaContext, metaData("d", metaChangedName)); len(rs) != 1 || rs[0].typ != repAck {
		t.Errorf("SET vhdkit:changed on an export without changes: %v", rs)
	}
}

func mustServe(t *testing.T, srv *Server) string {
	sock, _ := testServer(t, srv)
	return sock
}

func contextNames(rs []optReply) string {
	var names []string
	for _, r := range rs {
		if r.typ == repMetaContext {
			names = append(names, string(r.data[4:]))
		}
	}
	return strings.Join(names, ",")
}

// TestChangedBlockStatus: with both contexts set, a BLOCK_STATUS reply is
// a base:allocation chunk and a vhdkit:changed chunk, the second marking
// exactly the listed runs (joined across status windows), with REQ_ONE
// one descriptor each; with vhdkit:changed alone, one chunk.
func TestChangedBlockStatus(t *testing.T) {
	c, _ := changedServer(t)
	c.option(optStructuredReply, nil)
	c.option(optSetMetaContext, metaData("d", metaBaseAllocation, metaChangedName))
	c.open("d", false)

	c.request(0, cmdBlockStatus, 1, 0, 64<<20, nil)
	alloc, changed := twoStatusChunks(t, c)
	if id, _ := descriptorsOf(t, alloc); id != metaBaseAllocationID {
		t.Errorf("first chunk context %d", id)
	}
	id, ds := descriptorsOf(t, changed)
	want := [][2]uint32{{4096, 0}, {8192, 1}, {16<<20 - 512 - 12288, 0}, {1024, 1}, {40<<20 - (16<<20 + 512), 0}, {2 << 20, 1}, {22 << 20, 0}}
	if id != metaChangedID || !sameDescriptors(ds, want) {
		t.Errorf("vhdkit:changed: context %d %v, want %v", id, ds, want)
	}

	c.request(cmdFlagReqOne, cmdBlockStatus, 2, 8192, 1<<20, nil)
	alloc, changed = twoStatusChunks(t, c)
	if _, ds := descriptorsOf(t, changed); !sameDescriptors(ds, [][2]uint32{{4096, 1}}) {
		t.Errorf("REQ_ONE vhdkit:changed: %v", ds)
	}
	if _, ds := descriptorsOf(t, alloc); len(ds) != 1 {
		t.Errorf("REQ_ONE base:allocation: %v", ds)
	}

	only, _ := changedServer(t)
	only.option(optStructuredReply, nil)
	only.option(optSetMetaContext, metaData("d", metaChangedName))
	only.open("d", false)
	only.request(0, cmdBlockStatus, 3, 40<<20, 4<<20, nil)
	r := only.structuredReply(0, 0)
	if _, ds := descriptorsOf(t, r.status); r.errno != 0 || r.chunks != 1 || !sameDescriptors(ds, [][2]uint32{{2 << 20, 1}, {2 << 20, 0}}) {
		t.Errorf("vhdkit:changed alone: errno %d, %d chunks, %v", r.errno, r.chunks, ds)
	}
}

// twoStatusChunks reads a reply of two BLOCK_STATUS chunks, the second
// flagged done.
func twoStatusChunks(t *testing.T, c *client) (first, second []byte) {
	t.Helper()
	var got [][]byte
	for len(got) < 2 {
		var h [chunkHdrSize]byte
		c.read(h[:])
		flags, typ := binary.BigEndian.Uint16(h[4:]), binary.BigEndian.Uint16(h[6:])
		p := make([]byte, binary.BigEndian.Uint32(h[16:]))
		c.read(p)
		if typ != replyBlockStatus {
			t.Fatalf("chunk type %d: %q", typ, p)
		}
		if done := flags&replyFlagDone != 0; done != (len(got) == 1) {
			t.Fatalf("chunk %d: done flag %v", len(got), done)
		}
		got = append(got, p)
	}
	return got[0], got[1]
}

func sameDescriptors(a, b [][2]uint32) bool {
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

// TestNbdinfoMapChanged: libnbd's nbdinfo reads the context by name.
func TestNbdinfoMapChanged(t *testing.T) {
	need(t, "nbdinfo")
	d := &changedDisk{memDisk: newMemDisk(64 << 20), runs: testChanges}
	sock := mustServe(t, oneExport(d))
	uri := "nbd+unix:///d?socket=" + sock
	got := run(t, "nbdinfo", "--map="+metaChangedName, uri)
	want := mapLines(
		0, 4096, 0, "",
		4096, 8192, 1, "",
		12288, 16<<20-512-12288, 0, "",
		16<<20-512, 1024, 1, "",
		16<<20+512, 40<<20-(16<<20+512), 0, "",
		40<<20, 2<<20, 1, "",
		42<<20, 22<<20, 0, "",
	)
	if normalize(got) != normalize(want) {
		t.Errorf("nbdinfo --map=%s:\n%s\nwant:\n%s", metaChangedName, got, want)
	}
	if out, err := exec.Command("nbdinfo", "--list", "--content", uri).CombinedOutput(); err != nil || !strings.Contains(string(out), metaChangedName) {
		t.Errorf("nbdinfo --list does not show %s: %v\n%s", metaChangedName, err, out)
	}
}
