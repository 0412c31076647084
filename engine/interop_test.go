package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Interoperability with the real peers: qemu-img and qemu-io 7.2 (QEMU's
// vpc driver) and vhdiinfo (libvhdi 20210425). Images the engine makes
// must look right to them, data the engine writes must read back through
// them, and images QEMU makes and writes must read right through the
// engine, which must also be able to write into them.

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// qemuCheck runs qemu-img check. QEMU 7.2's vpc driver has no checker:
// qemu-img exits 63 ("does not support checks"), which is accepted; any
// other failure is not.
func qemuCheck(t testing.TB, path string) {
	t.Helper()
	needTool(t, "qemu-img")
	out, err := exec.Command("qemu-img", "check", "-f", "vpc", path).CombinedOutput()
	var ee *exec.ExitError
	if err == nil || errors.As(err, &ee) && ee.ExitCode() == 63 && bytes.Contains(out, []byte("does not support checks")) {
		return
	}
	t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
}

// TestInteropEngineImagesPeers: fresh images of many sizes, odd ones and
// huge sparse ones included, have the size asked for in qemu-img and
// vhdiinfo, which also agree on the type.
func TestInteropEngineImagesPeers(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		typ  DiskType
		size int64
	}{
		{TypeFixed, mib + 512},
		{TypeFixed, 10*mib + 3*512},
		{TypeFixed, 64 * mib},
		{TypeFixed, 127*gib + 512}, // sparse on the host: nothing is written
		{TypeDynamic, 512},
		{TypeDynamic, mib + 512},
		{TypeDynamic, 10*mib + 3*512},
		{TypeDynamic, 1*gib - 512},
		{TypeDynamic, 127 * gib},
		{TypeDynamic, 200 * gib},
		{TypeDynamic, 2040 * gib},
	} {
		name := fmt.Sprintf("%s-%d", tc.typ, tc.size)
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".vhd")
			img, err := Create(path, CreateOptions{Type: tc.typ, Size: tc.size})
			if err != nil {
				t.Fatal(err)
			}
			if img.Size() != tc.size {
				t.Errorf("engine size %d", img.Size())
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			checkClean(t, path)
			if got := qemuVirtualSize(t, path); got != tc.size {
				t.Errorf("qemu-img virtual-size %d, want %d", got, tc.size)
			}
			rep, got := vhdiinfoReport(t, path)
			if got != tc.size {
				t.Errorf("vhdiinfo media size %d, want %d", got, tc.size)
			}
			wantType := map[DiskType]string{TypeFixed: "Fixed", TypeDynamic: "Dynamic"}[tc.typ]
			if !strings.Contains(rep, "Disk type\t\t: "+wantType) {
				t.Errorf("vhdiinfo does not call it %s:\n%s", wantType, rep)
			}
			qemuCheck(t, path)
			if tc.typ == TypeDynamic {
				runTool(t, "qemu-img", "compare", "-q", "-f", "vpc", "-F", "raw", path, newModel(t, filepath.Join(dir, "zero.raw"), tc.size).path)
			}
		})
	}
}

// checkAfterWrites is checkClean for an image exerciseDisk wrote, with
// one known exception. When Zero or Trim frees the block that is last in
// the file, its space stays before the footer (the flushed BAT may still
// point at it until the next flush, so it cannot be cut at once), and
// Check reports it as an orphan tail ("blocks allocated but never
// flushed", fixable). That tail is the one problem tolerated here:
// Repair must cut it, after which the image must be clean.
func checkAfterWrites(t testing.TB, path string) {
	t.Helper()
	rep, err := CheckPath(path, CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) == 1 && rep.Problems[0].Code == CodeOrphanTail {
		t.Logf("freed space at the end of the file: %s", rep.Problems[0])
		did, err := Repair(path, RepairOptions{})
		if err != nil || len(did) != 1 {
			t.Fatalf("repair of the freed tail: %q, %v", did, err)
		}
	}
	checkClean(t, path)
}

// randomBytes returns n bytes from rng, never all zero.
func randomBytes(rng *rand.Rand, n int64) []byte {
	p := make([]byte, n)
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
	}
	for i := len(p) / 8 * 8; i < len(p); i++ {
		p[i] = byte(rng.Uint32())
	}
	p[0] |= 1
	return p
}

// exerciseDisk drives img through the kinds of writes the engine treats
// differently and mirrors each in the model: random data at scattered
// unaligned offsets, sub-sector writes, writes straddling blocks, zero
// writes where nothing is allocated (elided), whole-block Zero and Trim
// (deallocated), partial zeroing. span limits where it writes (huge
// sparse disks get a few MiB near the start, middle and end).
func exerciseDisk(t *testing.T, img *Image, m *diskModel, seed uint64) {
	t.Helper()
	size := img.Size()
	rng := rand.New(rand.NewPCG(seed, 99))
	bs := img.BlockSize()
	if bs == 0 {
		bs = 2 * mib
	}
	// Regions to write in: all of a small disk, three 8 MiB windows of a
	// big one.
	windows := [][2]int64{{0, size}}
	if size > 64*mib {
		windows = [][2]int64{{0, 8 * mib}, {size/2 - 4*mib + 1536, size/2 + 4*mib}, {size - 8*mib, size}}
	}
	pick := func(n int64) int64 {
		w := windows[rng.IntN(len(windows))]
		n = min(n, w[1]-w[0])
		return w[0] + rng.Int64N(w[1]-w[0]-n+1)
	}
	write := func(p []byte, off int64) {
		t.Helper()
		if _, err := img.WriteAt(p, off); err != nil {
			t.Fatalf("write %d bytes at %d: %v", len(p), off, err)
		}
		m.write(t, p, off)
	}
	// Scattered unaligned writes, some across block boundaries.
	for i := 0; i < 24; i++ {
		n := 1 + rng.Int64N(200000)
		off := pick(n)
		write(randomBytes(rng, min(n, size-off)), off)
	}
	// Sub-sector writes: a byte, a few bytes across a sector boundary,
	// the last byte of the disk, the first.
	write([]byte{0xee}, pick(1))
	off := pick(600)/SectorSize*SectorSize + SectorSize - 3
	if off+6 <= size {
		write([]byte{1, 2, 3, 4, 5, 6}, off)
	}
	write([]byte{0x7f}, size-1)
	write([]byte{0x80}, 0)
	// A write across a block boundary.
	if size > 2*bs {
		write(randomBytes(rng, 3000), bs-1000)
	}
	// Zeros written where nothing is allocated must allocate nothing.
	if img.Type() == TypeDynamic && size > 4*bs {
		var hole int64 = -1
		ext, err := img.Extents(0, size)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ext {
			if e.State == ExtentHole && e.Len >= 2*bs {
				hole = alignUp(e.Off, bs)
				break
			}
		}
		if hole >= 0 {
			before := img.AllocatedBytes()
			write(make([]byte, bs+4096+7), hole+13)
			if after := img.AllocatedBytes(); after != before {
				t.Errorf("writing zeros into a hole at %d allocated %d bytes", hole, after-before)
			}
		}
	}
	// Whole-block Zero and Trim, and partial zeroing of both kinds,
	// over data the writes above put there.
	if size >= 4*bs {
		for i, op := range []string{"zero", "trim", "zero-keep", "zero-partial"} {
			blk := int64(i) * bs
			if size > 64*mib {
				blk = size/bs*bs - int64(4-i)*bs
			}
			write(randomBytes(rng, bs), blk)
			var err error
			switch op {
			case "zero":
				err = img.Zero(blk, bs, ZeroMayDeallocate)
				m.zero(t, blk, bs)
			case "trim":
				err = img.Trim(blk, bs)
				m.zero(t, blk, bs)
			case "zero-keep":
				err = img.Zero(blk+100, bs-1000, ZeroKeepAllocated)
				m.zero(t, blk+100, bs-1000)
			case "zero-partial":
				err = img.Zero(blk+512, bs/2+77, ZeroMayDeallocate)
				m.zero(t, blk+512, bs/2+77)
			}
			if err != nil {
				t.Fatalf("%s at %d: %v", op, blk, err)
			}
			if img.Type() == TypeDynamic && (op == "zero" || op == "trim") {
				ext, err := img.Extents(blk, bs)
				if err != nil || len(ext) != 1 || ext[0].State != ExtentHole {
					t.Errorf("%s of a whole block left extents %v, %v; want a hole", op, ext, err)
				}
			}
		}
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestInteropEngineWritesQEMUReads: what the engine writes, qemu-img
// reads back byte for byte, and vhdiinfo still describes the image.
func TestInteropEngineWritesQEMUReads(t *testing.T) {
	dir := t.TempDir()
	for i, tc := range []struct {
		typ       DiskType
		size      int64
		blockSize int64
	}{
		{TypeFixed, mib + 512, 0},
		{TypeFixed, 10*mib + 3*512, 0},
		{TypeDynamic, mib + 512, 0},
		{TypeDynamic, 10*mib + 3*512, 0},
		{TypeDynamic, 24*mib + 512, 512 << 10},
		{TypeDynamic, 9*mib + 1536, 64 << 10},
		{TypeDynamic, 200 * gib, 0},
		{TypeDynamic, 2040 * gib, 0},
	} {
		name := fmt.Sprintf("%s-%d-%d", tc.typ, tc.size, tc.blockSize)
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".vhd")
			img, err := Create(path, CreateOptions{Type: tc.typ, Size: tc.size, BlockSize: tc.blockSize})
			if err != nil {
				t.Fatal(err)
			}
			m := newModel(t, filepath.Join(dir, name+".raw"), tc.size)
			exerciseDisk(t, img, m, uint64(i))
			sameAsModel(t, img, m)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			checkAfterWrites(t, path)
			qemuMustRead(t, path, m.path, dir)
			if _, got := vhdiinfoReport(t, path); got != tc.size {
				t.Errorf("vhdiinfo media size %d, want %d", got, tc.size)
			}
			// Reopened, the engine reads the same.
			img, err = Open(path, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			sameAsModel(t, img, m)
			img.Close()
			os.Remove(path)
		})
	}
}

// qemuIO runs qemu-io on a vpc image with one -c per command.
func qemuIO(t testing.TB, path string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "vpc"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := runTool(t, "qemu-io", append(args, path)...)
	if bytes.Contains(out, []byte("error")) || bytes.Contains(out, []byte("failed")) {
		t.Fatalf("qemu-io %q:\n%s", cmds, out)
	}
}

// TestInteropQEMUImagesEngine: images qemu-img creates and qemu-io writes
// read through the engine exactly as qemu-img convert reads them; the
// engine then writes into them (its new blocks land 4 KiB aligned after
// QEMU's unaligned ones) and qemu-img still reads everything right.
func TestInteropQEMUImagesEngine(t *testing.T) {
	dir := t.TempDir()
	for i, tc := range []struct {
		sub  string
		size int64
		opts string
	}{
		{"dynamic", 10 * mib, ""},
		{"dynamic", 10*mib + 3*512, ""},
		{"dynamic", 100*mib + 512, ""},
		{"dynamic", 10*mib + 3*512, "force_size=on"},
		{"dynamic", 200 * gib, ""},
		{"fixed", 10 * mib, ""},
		{"fixed", 10*mib + 3*512, ""},
		{"fixed", 10*mib + 3*512, "force_size=on"},
		{"fixed", 33*mib + 1024, ""},
	} {
		name := fmt.Sprintf("%s-%d-%s", tc.sub, tc.size, strings.TrimSuffix(tc.opts, "=on"))
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".vhd")
			opts := "subformat=" + tc.sub
			if tc.opts != "" {
				opts += "," + tc.opts
			}
			runTool(t, "qemu-img", "create", "-q", "-f", "vpc", "-o", opts, path, fmt.Sprint(tc.size))
			size := qemuVirtualSize(t, path)
			// Without force_size QEMU rounds the size up to a CHS product.
			if tc.opts == "force_size=on" || size == tc.size {
			} else if size < tc.size || size != GeometryFor(size).Bytes() && size != tc.size {
				t.Fatalf("qemu-img made a disk of %d bytes for %d", size, tc.size)
			}
			m := newModel(t, filepath.Join(dir, name+".raw"), size)
			// QEMU writes: patterns at aligned and unaligned offsets,
			// across its 2 MiB blocks, near the end, and zeros (-z) over
			// part of a pattern.
			type qw struct {
				pat     byte
				off, n  int64
				zeroes  bool
				comment string
			}
			ws := []qw{
				{0xab, 0, 4096, false, "first sector"},
				{0xcd, 1000, 3000, false, "unaligned"},
				{0x11, 2*mib - 512, 1536, false, "across a block boundary"},
				{0x22, size - 4096, 4096, false, "last 4 KiB"},
				{0x33, size/2 + 7, 70000, false, "middle, odd offset"},
				{0, size/2 + 4096, 8192, true, "write -z over the middle"},
				{0x44, 5*mib + 512, 512, false, "one sector"},
			}
			var cmds []string
			for _, w := range ws {
				if w.zeroes {
					cmds = append(cmds, fmt.Sprintf("write -z %d %d", w.off, w.n))
					m.write(t, make([]byte, w.n), w.off)
				} else {
					cmds = append(cmds, fmt.Sprintf("write -P %#x %d %d", w.pat, w.off, w.n))
					m.write(t, bytes.Repeat([]byte{w.pat}, int(w.n)), w.off)
				}
			}
			qemuIO(t, path, cmds...)
			qemuMustRead(t, path, m.path, dir)

			img, err := Open(path, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if img.Size() != size {
				t.Errorf("engine size %d, qemu-img %d", img.Size(), size)
			}
			sameAsModel(t, img, m)
			img.Close()
			checkClean(t, path)

			// The engine writes into QEMU's image.
			img, err = Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			exerciseDisk(t, img, m, uint64(100+i))
			sameAsModel(t, img, m)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			checkAfterWrites(t, path)
			qemuMustRead(t, path, m.path, dir)
			// And QEMU writes again after the engine.
			qemuIO(t, path, "write -P 0x5c 3000 10000", fmt.Sprintf("write -P 0x6d %d 512", size-512))
			m.write(t, bytes.Repeat([]byte{0x5c}, 10000), 3000)
			m.write(t, bytes.Repeat([]byte{0x6d}, 512), size-512)
			img, err = Open(path, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			sameAsModel(t, img, m)
			img.Close()
			checkClean(t, path)
			os.Remove(path)
		})
	}
}
