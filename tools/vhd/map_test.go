package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/chains"
)

// sectorMap is a map's answer per 512-byte sector.
type sectorMap struct {
	zero, data []bool
	offset     []int64 // -1 where the run has none
}

func parseMap(t *testing.T, out string, size int64) sectorMap {
	t.Helper()
	var entries []mapEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("map output is not JSON: %v\n%s", err, out)
	}
	n := size / 512
	m := sectorMap{make([]bool, n), make([]bool, n), make([]int64, n)}
	var next int64
	for _, e := range entries {
		if e.Start != next || e.Start%512 != 0 {
			t.Fatalf("map entries do not tile the disk at %d:\n%s", e.Start, out)
		}
		next = e.Start + e.Length
		for s := e.Start / 512; s < min(n, next/512); s++ {
			m.zero[s], m.data[s], m.offset[s] = e.Zero, e.Data, -1
			if e.Offset != nil {
				m.offset[s] = *e.Offset + s*512 - e.Start
			}
		}
	}
	if next != size {
		t.Fatalf("map entries end at %d, not at the disk's %d bytes:\n%s", next, size, out)
	}
	return m
}

// TestMapAgreesWithQemuImg holds vhd map --json against qemu-img map
// --output=json, sector by sector, on raw files and fixed and dynamic VHDs
// made by both tools:
//   - raw and fixed: the same zeros (qemu-img calls a fixed VHD's holes
//     "data" too: it passes the file through), and the same offsets;
//   - dynamic: where vhd says data, qemu-img says data at the same file
//     offset; where qemu-img says zero, vhd does not say data. By design
//     vhd reads the sector bitmaps and qemu-img does not, so in a block
//     partly written vhd calls the unwritten sectors a hole where qemu-img
//     says data: those must read as zeros.
func TestMapAgreesWithQemuImg(t *testing.T) {
	dir := t.TempDir()
	const size = 12 << 20
	raw := filepath.Join(dir, "model.raw")
	model := makeRaw(t, raw, size,
		region{off: 1 << 20, n: 640 << 10},             // inside block 0
		region{off: 4<<20 - 4096, n: 8192},             // across blocks 1 and 2
		region{off: 6 << 20, n: 2 << 20},               // block 3, whole
		region{off: 9 << 20, n: 64 << 10, zeros: true}, // written zeros
		region{off: size - 512, n: 512})                // the last sector
	for _, m := range diskMakers {
		t.Run(m.name, func(t *testing.T) {
			img := filepath.Join(dir, "map-"+m.name)
			m.make(t, raw, img)
			q := parseMap(t, qemuImg(t, "map", "-f", m.qemu, "--output=json", img), size)
			var r result
			if m.name == "raw" {
				r = vhdOK(t, "map", "-f", "raw", "--output=json", img)
			} else {
				r = vhdOK(t, "map", "--json", img)
			}
			v := parseMap(t, r.stdout, size)
			dynamic := m.name == "vhd-dynamic" || m.name == "qemu-dynamic"
			var data, finer int
			for s := range v.data {
				if v.data[s] {
					data++
				}
				if q.data[s] && !q.zero[s] && !v.data[s] {
					finer++
				}
				at := int64(s) * 512
				switch {
				case !dynamic && (q.zero[s] != v.zero[s] || q.offset[s] != v.offset[s]):
					t.Fatalf("sector at %#x: qemu-img zero=%v offset=%d, vhd zero=%v offset=%d", at, q.zero[s], q.offset[s], v.zero[s], v.offset[s])
				case dynamic && v.data[s] && (!q.data[s] || q.offset[s] != v.offset[s]):
					t.Fatalf("sector at %#x: vhd says data at %d, qemu-img data=%v at %d", at, v.offset[s], q.data[s], q.offset[s])
				case dynamic && q.zero[s] && v.data[s]:
					t.Fatalf("sector at %#x: qemu-img says zero, vhd data", at)
				case v.zero[s] && !isZeroBytes(model[at:at+512]):
					t.Fatalf("sector at %#x: vhd says zeros, the disk holds data", at)
				}
			}
			// Not vacuous: data was found, and in vhd's dynamic images
			// (bitmaps written per sector) partly written blocks too.
			if data == 0 || m.name == "vhd-dynamic" && finer == 0 {
				t.Fatalf("vhd map found %d data sectors, %d finer than qemu-img's:\n%s", data, finer, r.stdout)
			}
			if m.qemu == "vpc" {
				checkOK(t, img)
			}
		})
	}
}

func isZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestMapChain: each run names the layer that holds it, the top at depth
// 0, and holes have the last layer's depth (qemu-img map's convention).
func TestMapChain(t *testing.T) {
	dir := t.TempDir()
	const size = 8 << 20
	raw, base, top := filepath.Join(dir, "b.raw"), filepath.Join(dir, "base.vhd"), filepath.Join(dir, "top.vhd")
	makeRaw(t, raw, size, region{off: 1 << 20, n: 1 << 20})
	vhdOK(t, "convert", "--to", "dynamic", raw, base)
	vhdOK(t, "snapshot", base, top)
	c, err := chains.Open(top, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(make([]byte, 4096), 1<<20+8192); err != nil { // zeros over the base's data
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	var got []mapEntry
	vhdJSON(t, &got, "map", "--json", top)
	type run struct {
		start, length int64
		depth         int
		data, present bool
		file          string
	}
	want := []run{
		{0, 1 << 20, 1, false, false, ""},
		{1 << 20, 8192, 1, true, true, base},
		{1<<20 + 8192, 4096, 0, true, true, top},
		{1<<20 + 12288, 1<<20 - 12288, 1, true, true, base},
		{2 << 20, size - 2<<20, 1, false, false, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("vhd map of the chain: %d runs, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		file, _ := filepath.Abs(w.file)
		if w.file == top {
			file = top
		}
		if g.Start != w.start || g.Length != w.length || g.Depth != w.depth || g.Data != w.data || g.Present != w.present || g.File != file && w.file != "" {
			t.Errorf("run %d: got %+v, want %+v", i, g, w)
		}
	}
	r := vhdOK(t, "map", top)
	if !strings.Contains(r.stdout, base) || !strings.Contains(r.stdout, "hole") {
		t.Errorf("vhd map (text) names no layer or hole:\n%s", r.stdout)
	}
	checkOK(t, top)
}
