package nbdclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"vhdkit/engine"
)

// TestDisk: an export read as an engine.Disk. One ReadAt of the whole
// export (sent as pieces at once) reads what the image holds; a read
// across the end stops there with io.EOF; extents cover the export
// exactly, with every written range in data; engine.Convert copies it
// into a raw file that reads the same and holds only the data; writes
// are refused.
func TestDisk(t *testing.T) {
	uri, model := serveTestImage(t, nil)
	d, err := OpenDisk(context.Background(), uri, TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != testSize || !d.ReadOnly() {
		t.Fatalf("size %d read-only %v, want %d true", d.Size(), d.ReadOnly(), testSize)
	}
	got := make([]byte, testSize)
	if n, err := d.ReadAt(got, 0); n != testSize || err != nil || !bytes.Equal(got, model) {
		t.Fatalf("ReadAt of the whole export: %d, %v, same %v", n, err, bytes.Equal(got, model))
	}
	tail := make([]byte, 8192)
	if n, err := d.ReadAt(tail, testSize-4096); n != 4096 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt across the end: %d, %v; want 4096, EOF", n, err)
	}
	if n, err := d.ReadAt(tail, testSize); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt at the end: %d, %v; want 0, EOF", n, err)
	}
	if _, err := d.WriteAt(tail, 0); err == nil {
		t.Error("WriteAt was not refused")
	}

	exts, err := d.Extents(0, testSize)
	if err != nil {
		t.Fatal(err)
	}
	var at, data int64
	for _, e := range exts {
		if e.Off != at || e.Len <= 0 {
			t.Fatalf("extents do not tile the export: %+v", exts)
		}
		at += e.Len
		if e.State == engine.ExtentData {
			data += e.Len
		}
	}
	if at != testSize {
		t.Fatalf("extents cover %d bytes of %d", at, testSize)
	}
	for _, w := range testWrites {
		if st := stateAt(exts, w.off, w.n); st != engine.ExtentData {
			t.Errorf("written range %d+%d is shown as %v", w.off, w.n, st)
		}
	}
	if data > 8<<20 {
		t.Errorf("%d bytes shown as data; the image holds at most 3 blocks", data)
	}

	out := filepath.Join(t.TempDir(), "copy.raw")
	res, err := engine.Convert(context.Background(), uri, out, engine.ConvertOptions{To: engine.FormatRaw,
		OpenSource: func(string) (engine.Disk, string, error) { return d, "NBD export", nil }})
	if err != nil {
		t.Fatal(err)
	}
	copied, _ := os.ReadFile(out)
	if !bytes.Equal(copied, model) || res.Stats.Written != data {
		t.Errorf("convert from the export: same %v, wrote %d bytes (data shown: %d)", bytes.Equal(copied, model), res.Stats.Written, data)
	}
}

// stateAt is the state of [off, off+n) if one extent state covers it,
// else ExtentState(255).
func stateAt(exts []engine.Extent, off, n int64) engine.ExtentState {
	st := engine.ExtentState(255)
	for _, e := range exts {
		if e.Off < off+n && off < e.Off+e.Len {
			if st != 255 && st != e.State {
				return 255
			}
			st = e.State
		}
	}
	return st
}

// TestAllocationState: base:allocation's flags as extent states. A hole
// that does not read as zeros must be read, so it is data.
func TestAllocationState(t *testing.T) {
	for flags, want := range map[uint32]engine.ExtentState{
		0:                     engine.ExtentData,
		StateHole:             engine.ExtentData,
		StateZero:             engine.ExtentZero,
		StateHole | StateZero: engine.ExtentHole,
	} {
		if got := allocationState(flags); got != want {
			t.Errorf("flags %#x: %v, want %v", flags, got, want)
		}
	}
}

func TestIsURI(t *testing.T) {
	for s, want := range map[string]bool{
		"nbd://h/e": true, "nbds://h:1/": true, "nbd+unix:///e?socket=/s": true, "nbds+unix:///?socket=s": true,
		"disk.vhd": false, "/tmp/nbd://x": false, "nbd:disk": false, "http://h/": false, "nbd+vsock:///": false,
	} {
		if IsURI(s) != want {
			t.Errorf("IsURI(%q) = %v", s, !want)
		}
	}
}

// TestDiskRaggedStatus: a server describing runs of one byte,
// alternating data and holes, would make a list of a million extents for
// 1 MiB; Disk promises at most one per sector and shows the range as
// data instead (read, so copied right). Sector-sized runs are kept.
func TestDiskRaggedStatus(t *testing.T) {
	for _, run := range []uint32{1, 512} {
		c := scripted(t, plainInfo, func(h, off uint64, n uint32) []byte {
			var desc [][]byte
			for i := uint32(0); i < min(n/run, 4096); i++ {
				desc = append(desc, be32(run), be32(i%2*3))
			}
			return chunkBytes(replyFlagDone, replyBlockStatus, h, cat(append([][]byte{be32(1)}, desc...)...))
		})
		d := &Disk{ctx: context.Background(), c: c, name: "scripted"}
		exts, err := d.Extents(0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case run == 1 && (len(exts) != 1 || exts[0] != engine.Extent{Off: 0, Len: 1 << 20, State: engine.ExtentData}):
			t.Errorf("1-byte runs: %d extents, first %+v; want all of it as one data extent", len(exts), exts[0])
		case run == 512 && len(exts) != 2048:
			t.Errorf("512-byte runs: %d extents, want 2048", len(exts))
		}
	}
}

// TestDiskCreepingStatus: a server answering each BLOCK_STATUS about
// one byte (the spec lets it answer about less than asked) would take a
// request per byte; Disk shows the range as data after the first answer
// of less than a sector. (Found by review: 20000 requests for 1 MiB.)
func TestDiskCreepingStatus(t *testing.T) {
	var reqs atomic.Int64
	c := scripted(t, plainInfo, func(h, off uint64, n uint32) []byte {
		reqs.Add(1)
		return chunkBytes(replyFlagDone, replyBlockStatus, h, cat(be32(1), be32(1), be32(0)))
	})
	d := &Disk{ctx: context.Background(), c: c, name: "scripted"}
	exts, err := d.Extents(0, 1<<20)
	if err != nil || len(exts) != 1 || exts[0] != (engine.Extent{Off: 0, Len: 1 << 20, State: engine.ExtentData}) || reqs.Load() != 1 {
		t.Errorf("Extents of a creeping server: %+v, %v after %d requests; want one data extent after 1", exts, err, reqs.Load())
	}
}
