package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
	"vhdkit/internal/blktap"
)

// TestCheckAndRepairStaleBatmap (issue 15, item 1): a blktap image whose
// batmap marks an unallocated block full, as vhdkit's trims used to
// leave them. vhd check reports it under its stable code, as vhd-util
// check rejects it; vhd repair fixes it, and a libvhd write into that
// block then reaches its bitmap, so vhd-util and vhd read it.
func TestCheckAndRepairStaleBatmap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tap.vhd")
	blktap.Util(t, "create", "-n", path, "-s", "16")
	full := bytes.Repeat([]byte{5}, 2<<20)
	blktap.Write(t, path, 0, full) // block 0 full: libvhd sets its bit
	blktap.Check(t, path)
	setBatmapBit(t, path, 1) // block 1 is not allocated
	if blktap.CheckErr(t, path) == nil {
		t.Fatal("vhd-util check accepts a batmap marking an unallocated block full: the test image is wrong")
	}

	var rep struct {
		OK       bool             `json:"ok"`
		Problems []engine.Problem `json:"problems"`
	}
	r := vhdCode(t, 3, "check", "--json", path)
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep.OK || len(rep.Problems) != 1 ||
		rep.Problems[0].Code != engine.CodeBatmapStale || !rep.Problems[0].Fatal || !rep.Problems[0].Fixable {
		t.Fatalf("vhd check --json: %+v (%v)\n%s", rep, err, r.stdout)
	}

	r = vhdOK(t, "repair", path)
	if !strings.Contains(r.stdout, "batmap") {
		t.Errorf("vhd repair does not say it rebuilt the batmap:\n%s", r.stdout)
	}
	blktap.Check(t, path)
	checkOK(t, path)

	part := bytes.Repeat([]byte{6}, 4096)
	blktap.Write(t, path, 2<<20+8192, part)
	want := make([]byte, 16<<20)
	copy(want, full)
	copy(want[2<<20+8192:], part)
	if got := blktap.Read(t, path, 16<<20); !bytes.Equal(got, want) {
		t.Errorf("vhd-util reads the repaired image wrong from byte %d", diffAt(got, want))
	}
	img, err := engine.Open(path, engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, 16<<20)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("vhd reads the repaired image wrong from byte %d", diffAt(got, want))
	}
	blktap.Check(t, path)
	checkOK(t, path)
}

// setBatmapBit sets block b's bit in the batmap of the blktap image at
// path and fixes the checksum (version 1.2: the complement of the byte
// sum of the map's first sector, for disks under 8 GiB), so that blktap
// trusts it.
func setBatmapBit(t *testing.T, path string, b int) {
	t.Helper()
	img, err := engine.Open(path, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	hdr := img.Header()
	img.Close()
	if img.Size() >= 8<<30 {
		t.Fatal("setBatmapBit sums one sector: disks under 8 GiB only")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The batmap header follows the BAT (engine/batmap.go draws it): its
	// map offset at byte 8, its checksum at byte 24, big-endian.
	at := int64(hdr.TableOffset) + (int64(hdr.MaxTableEntries)*4+511)/512*512
	if string(raw[at:at+8]) != "tdbatmap" {
		t.Fatalf("no batmap header at %#x", at)
	}
	mapOff := binary.BigEndian.Uint64(raw[at+8:])
	m := raw[mapOff : mapOff+512]
	m[b/8] |= 0x80 >> (b % 8)
	var sum uint32
	for _, c := range m {
		sum += uint32(c)
	}
	binary.BigEndian.PutUint32(raw[at+24:], ^sum)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}
