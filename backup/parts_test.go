package backup

import (
	"bytes"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"vhdkit/engine"
	"vhdkit/engine/crashfile"
)

func TestMarkerNames(t *testing.T) {
	u := engine.UUID{0xab, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	v := engine.UUID{0xcd}
	m := MarkerPath("/srv/vm/disk.vhd", u)
	if m != "/srv/vm/disk.since-"+u.String()+".vhd" {
		t.Errorf("MarkerPath = %s", m)
	}
	if got, ok := MarkerOf(m); !ok || got != u {
		t.Errorf("MarkerOf(%s) = %v %v", m, got, ok)
	}
	// The next marker replaces the stem's marker, it does not stack.
	if m2 := MarkerPath(m, v); m2 != "/srv/vm/disk.since-"+v.String()+".vhd" {
		t.Errorf("MarkerPath of a marker = %s", m2)
	}
	for _, p := range []string{"/srv/disk.vhd", "/srv/disk.since-xyz.vhd", "/srv/disk.since-" + u.String() + ".vhd.part", "/srv/x.since-" + strings.ToUpper(u.String()) + ".vhd"} {
		if _, ok := MarkerOf(p); ok {
			t.Errorf("MarkerOf(%s) took it for a marker", p)
		}
	}
	if b := BackupUUID(u); b == u || b != BackupUUID(u) || b == BackupUUID(v) || b[6]>>4 != 8 {
		t.Errorf("BackupUUID(%s) = %s", u, b)
	}
}

func TestDescriptions(t *testing.T) {
	u, v := engine.NewUUID(), engine.NewUUID()
	for _, id := range []Identity{{Point: u}, {Point: u, Since: v}} {
		got, ok := ParseDescription(id.Description())
		if !ok || got != id {
			t.Errorf("%q read back as %+v %v", id.Description(), got, ok)
		}
	}
	for _, s := range []string{"", "disk.vhd", "vhdkit backup point=" + u.String(), "vhdkit backup point=x since=none",
		"vhdkit backup point=" + u.String() + " since=00000000-0000-0000-0000-000000000000"} {
		if _, ok := ParseDescription(s); ok {
			t.Errorf("%q taken for a backup export's description", s)
		}
	}
}

func TestStateLog(t *testing.T) {
	f := crashfile.New()
	h := stateHeader{Size: 1 << 30, Point: engine.NewUUID(), Since: engine.NewUUID(), Base: engine.NewUUID()}
	s, err := createState(f, h)
	if err != nil {
		t.Fatal(err)
	}
	rs := []record{{piece{0, 4096}, 1}, {piece{2 << 20, 1 << 20}, 0xdeadbeef}}
	if err := s.append(rs); err != nil {
		t.Fatal(err)
	}
	whole := f.Bytes()
	// Every cut of the last line, and a flipped digit, leaves the first
	// record and drops the second; a reopen cuts the file there.
	last := bytes.LastIndexByte(whole[:len(whole)-1], '\n') + 1
	cases := map[string][]byte{"whole": whole}
	for cut := last; cut < len(whole); cut++ {
		cases["cut at "+string(rune('0'+cut-last))] = whole[:cut]
	}
	flipped := bytes.Clone(whole)
	flipped[last] ^= 1
	cases["flipped"] = flipped
	zeroed := append(bytes.Clone(whole[:last]), make([]byte, 40)...)
	cases["zeros after"] = zeroed
	for name, b := range cases {
		g, err := openState(crashfile.FromBytes(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := 1
		if name == "whole" {
			want = 2
		}
		if g.head != h || len(g.done) != want || g.done[piece{0, 4096}] != 1 {
			t.Errorf("%s: header %+v, %d pieces", name, g.head, len(g.done))
		}
		if sz, _ := g.f.Size(); sz != g.end {
			t.Errorf("%s: the file was not cut after the last whole line (%d, %d)", name, sz, g.end)
		}
	}
	if _, err := openState(crashfile.FromBytes([]byte("garbage"))); err == nil {
		t.Error("a state file without header was read")
	}
}

func TestSplitRuns(t *testing.T) {
	const mb = 1 << 20
	got := splitRuns([][2]int64{{0, 4096}, {8192, 12288}, {3 * mb, 5*mb + 512}}, 2*mb, 64<<10)
	want := []piece{{0, 12288}, {3 * mb, mb}, {4 * mb, mb + 512}}
	if !slices.Equal(got, want) {
		t.Errorf("splitRuns = %v, want %v", got, want)
	}
	// Without a gap allowance runs stay apart; past maxRunsPerBlock a
	// block becomes one piece from its first run to its last.
	var runs [][2]int64
	for i := range int64(20) {
		runs = append(runs, [2]int64{i * 8192, i*8192 + 512})
	}
	got = splitRuns(runs[:3], 2*mb, 0)
	if len(got) != 3 {
		t.Errorf("no gap: %v", got)
	}
	got = splitRuns(runs, 2*mb, 0)
	if len(got) > maxRunsPerBlock || got[0].off != 0 || got[len(got)-1].off+got[len(got)-1].n != 19*8192+512 {
		t.Errorf("many runs: %v", got)
	}
	if total(got) < 20*512 {
		t.Errorf("many runs lost bytes: %v", got)
	}
}

func TestZeroRuns(t *testing.T) {
	b := make([]byte, 5*4096)
	b[4096+7] = 1     // second 4 KiB has data
	b[4*4096+100] = 2 // fifth too
	got := zeroRuns(b[1000:], 1000)
	want := []run{{1000, 4096 - 1000, true}, {4096, 4096, false}, {8192, 8192, true}, {4 * 4096, 4096, false}}
	if !slices.Equal(got, want) {
		t.Errorf("zeroRuns = %v, want %v", got, want)
	}
}

// TestChangedExtentsOfLayers: the changes are what the layers above the
// earlier point hold, each run as its topmost layer holds it.
func TestChangedExtentsOfLayers(t *testing.T) {
	d := newLiveDisk(t)
	d.c.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0) // before the first point
	first, _, _ := d.begin()
	first.Close()
	d.c.WriteAt(bytes.Repeat([]byte{2}, 8192), 4096)
	d.c.WriteAt(bytes.Repeat([]byte{3}, 4096), 8<<20)
	top := d.c.Layers()[0]
	if err := d.c.Snapshot(filepath.Join(d.dir, "other.vhd")); err != nil { // a plain snapshot in between
		t.Fatal(err)
	}
	d.c.Zero(8<<20, 4096, engine.ZeroMayDeallocate)
	d.c.WriteAt(bytes.Repeat([]byte{4}, 512), 8<<20+4096)
	disk, id, _ := d.begin()
	defer disk.Close()
	v, ok := disk.(*ChangedView)
	if !ok || len(v.changed) != 2 {
		t.Fatalf("the view of the second point: %T with %d changed layers (want 2: other.vhd and %s)", disk, len(v.changed), top.Path)
	}
	if id.Since.IsZero() {
		t.Fatal("no earlier point")
	}
	got, err := v.ChangedExtents(0, diskSize)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range got {
		n += e.Len
		if e.Off <= 0 && e.Off+e.Len > 4096 {
			t.Errorf("the write before the point is listed: %v", got)
		}
	}
	covered := func(off, l int64) bool {
		for _, e := range got {
			if e.Off <= off && off+l <= e.Off+e.Len {
				return true
			}
		}
		return false
	}
	for _, w := range [][2]int64{{4096, 8192}, {8 << 20, 4096}, {8<<20 + 4096, 512}} {
		if !covered(w[0], w[1]) {
			t.Errorf("the change at %d+%d is not listed: %v", w[0], w[1], got)
		}
	}
	if n > 4<<20 {
		t.Errorf("%d bytes listed as changed for 13 KiB written: %v", n, got)
	}
	sorted := slices.IsSortedFunc(got, func(a, b engine.Extent) int { return int(a.Off - b.Off) })
	for i := 1; i < len(got); i++ {
		sorted = sorted && got[i-1].Off+got[i-1].Len <= got[i].Off
	}
	if !sorted {
		t.Errorf("runs not sorted and apart: %v", got)
	}
}

func TestAddUnder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for range 200 {
		var list []engine.Extent
		owner := make([]int, 256)
		for layer := 1; layer <= 4; layer++ {
			for range 3 {
				off, l := rng.Int64N(250), 1+rng.Int64N(40)
				l = min(l, 256-off)
				for i := off; i < off+l; i++ {
					if owner[i] == 0 {
						owner[i] = layer
					}
				}
				list = addUnder(list, engine.Extent{Off: off, Len: l, State: engine.ExtentState(layer)})
			}
		}
		got := make([]int, 256)
		for _, e := range joinRuns(list) {
			for i := e.Off; i < e.Off+e.Len; i++ {
				if got[i] != 0 {
					t.Fatalf("runs overlap at %d: %v", i, list)
				}
				got[i] = int(e.State)
			}
		}
		if !slices.Equal(got, owner) {
			t.Fatalf("addUnder: %v, want owners %v", got, owner)
		}
	}
}

// TestKeptMarks: a mark reads back only whole and for its own UUID;
// written to a simulated file and cut at every moment, it is whole or
// absent.
func TestKeptMarks(t *testing.T) {
	dir := t.TempDir()
	layer := filepath.Join(dir, "disk.vhd")
	u, v := engine.NewUUID(), engine.NewUUID()
	if IsKept(layer, u) {
		t.Fatal("kept before marking")
	}
	if err := MarkKept(layer, u); err != nil {
		t.Fatal(err)
	}
	if !IsKept(layer, u) || IsKept(layer, v) {
		t.Error("the mark names the wrong layer")
	}
	if err := Unkeep(layer); err != nil || IsKept(layer, u) {
		t.Errorf("unkeep: %v", err)
	}
	rng := rand.New(rand.NewPCG(2, 2))
	for range 200 {
		f := crashfile.New()
		var cut *crashfile.File
		f.BeforeSync = func(int) error { cut = f.Crash(rng); return nil }
		if err := writeMark(f, u); err != nil {
			t.Fatal(err)
		}
		if got, ok := readMark(cut); ok && got != u {
			t.Fatalf("a cut mark reads as %s", got)
		}
		if got, ok := readMark(f); !ok || got != u {
			t.Fatal("a synced mark does not read back")
		}
	}
}
