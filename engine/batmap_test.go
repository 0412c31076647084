package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"vhdkit/engine/crashfile"
)

// tapCreator is what blktap writes in the footers of the images it makes.
var tapCreator = Creator{App: [4]byte{'t', 'a', 'p', 0}, Version: 0x00010003}

func newTapImage(t *testing.T, typ DiskType, size, blockSize int64) (*crashfile.File, *Image) {
	t.Helper()
	f := crashfile.New()
	opts := CreateOptions{Type: typ, Size: size, BlockSize: blockSize, UUID: UUID{3}, Time: time.Unix(1e9, 0), Creator: &tapCreator}
	if typ == TypeDifferencing {
		opts.Parent = &ParentInfo{UUID: UUID{8}, Name: "p.vhd", Locators: []LocatorPath{{LocatorW2ru, `.\p.vhd`}}}
	}
	img, err := CreateFile(f, t.Name(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if typ == TypeDifferencing {
		img.SetParent(zeroDisk(size))
	}
	return f, img
}

// diskBatmap reads the batmap of the image held in b as libvhd does,
// without the engine: the footer at the end, the header it names, the
// batmap header after the BAT, the checksummed part of the map. trusted
// is what blktap would conclude.
func diskBatmap(t *testing.T, b []byte) (bits []byte, trusted bool) {
	t.Helper()
	be := binary.BigEndian
	ft := b[len(b)-FooterSize:]
	hdr := b[be.Uint64(ft[offFooterDataOffset:]):]
	table := int64(be.Uint64(hdr[offHdrTableOffset:]))
	at := batmapHeaderOff(table, be.Uint32(hdr[offHdrMaxEntries:]))
	h, err := ParseBatmapHeader(b[at:at+BatmapHeaderSize], at)
	if err != nil {
		return nil, false
	}
	n := batmapSumBytes(be.Uint64(ft[offFooterCurSize:]))
	m := b[h.MapOffset : int64(h.MapOffset)+n]
	return m, batmapChecksum(m, h.Version) == h.Checksum
}

// markFull sets the batmap bits of the full blocks, as blktap does when
// its writes fill them (the engine never sets one itself).
func markFull(t *testing.T, img *Image) {
	t.Helper()
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := img.sparse.rebuildBatmap(); err != nil {
		t.Fatal(err)
	}
}

func wantBatmap(t *testing.T, f *crashfile.File, want byte, where string) {
	t.Helper()
	bits, ok := diskBatmap(t, f.Durable())
	if !ok {
		t.Fatalf("%s: blktap does not trust the durable batmap", where)
	}
	if bits[0] != want {
		t.Fatalf("%s: durable batmap %08b, want %08b", where, bits[0], want)
	}
}

func TestParseBatmapHeader(t *testing.T) {
	good := BatmapHeader{MapOffset: 2560, MapSize: 1, Version: batmapVersion, Checksum: 0xffffff00, Marker: 1}
	good.Keyhash[0] = 1
	raw := good.Marshal()
	h, err := ParseBatmapHeader(raw[:], 2048)
	if err != nil || h != good {
		t.Fatalf("good header: %+v, %v", h, err)
	}
	cases := []struct {
		name, field string
		mess        func(b []byte)
	}{
		{"cookie", "cookie", func(b []byte) { b[0] = 'x' }},
		{"version 2.0", "version", func(b []byte) { b[offBatmapVersion+1] = 2 }},
		{"version 1.3", "version", func(b []byte) { b[offBatmapVersion+3] = 3 }},
		{"map at 0", "map offset", func(b []byte) { clear(b[offBatmapOffset : offBatmapOffset+8]) }},
		{"map unaligned", "map offset", func(b []byte) { b[offBatmapOffset+7] = 1 }},
		{"map past any VHD", "map offset", func(b []byte) { b[offBatmapOffset] = 1 }},
		{"no map", "map size", func(b []byte) { clear(b[offBatmapSize : offBatmapSize+4]) }},
		{"huge map", "map size", func(b []byte) { b[offBatmapSize] = 1 }},
	}
	for _, c := range cases {
		b := raw
		c.mess(b[:])
		_, err := ParseBatmapHeader(b[:], 2048)
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Field != c.field || ce.Struct != "batmap" {
			t.Errorf("%s: error %v, want damage to the batmap's %s", c.name, err, c.field)
		}
	}
	if _, err := ParseBatmapHeader(raw[:100], 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short header: %v", err)
	}
}

// TestBatmapChecksumVersions: version 1.1 summed the map's bytes as
// signed chars, later ones unsigned.
func TestBatmapChecksumVersions(t *testing.T) {
	m := []byte{0xff, 0x01}
	if got := batmapChecksum(m, batmapVersion); got != ^uint32(0x100) {
		t.Errorf("1.2: %#x", got)
	}
	if got := batmapChecksum(m, batmapVersion11); got != ^uint32(0) {
		t.Errorf("1.1: %#x", got)
	}
}

// TestCreateTapImageHasBatmap: a new image with blktap's creator gets an
// empty batmap where blktap looks for it, which blktap trusts; Windows'
// creator gets none.
func TestCreateTapImageHasBatmap(t *testing.T) {
	for _, typ := range []DiskType{TypeDynamic, TypeDifferencing} {
		f, img := newTapImage(t, typ, 40<<20, 2<<20)
		if img.sparse.batmap == nil || !img.sparse.batmap.trusted() {
			t.Fatalf("%s: no trusted batmap: %+v", typ, img.sparse.batmap)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		bits, ok := diskBatmap(t, f.Bytes())
		if !ok || !isZero(bits) {
			t.Fatalf("%s: batmap %x trusted=%v", typ, bits, ok)
		}
		checkFileClean(t, f)
	}
	_, img := newTestImage(t, TypeDynamic, 40<<20, 2<<20)
	if img.sparse.batmap != nil {
		t.Fatal("a vhdkit image has a batmap")
	}
	img.Close()
}

// TestTrimClearsBatmapFirst: freeing a full block, or clearing some of
// its bits, clears its batmap bit, durably, before the call returns and
// before any flush; zeros written into part of a block leave it full and
// its bit set.
func TestTrimClearsBatmapFirst(t *testing.T) {
	const bs = 2 << 20
	f, img := newTapImage(t, TypeDynamic, 4*bs, bs)
	if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 4*bs), 0); err != nil {
		t.Fatal(err)
	}
	markFull(t, img)
	wantBatmap(t, f, 0b11110000, "filled")
	if err := img.Zero(2*bs+4096, 4096, ZeroMayDeallocate); err != nil {
		t.Fatal(err)
	}
	if err := img.Zero(2*bs, bs, ZeroKeepAllocated); err != nil {
		t.Fatal(err)
	}
	wantBatmap(t, f, 0b11110000, "zeros written")
	if err := img.Trim(bs, bs); err != nil {
		t.Fatal(err)
	}
	wantBatmap(t, f, 0b10110000, "block 1 trimmed")
	if err := img.Zero(3*bs-512, bs+512, ZeroMayDeallocate); err != nil {
		t.Fatal(err)
	}
	wantBatmap(t, f, 0b10100000, "block 3 zeroed whole")
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	checkFileClean(t, f)

	f, img = newTapImage(t, TypeDifferencing, 2*bs, bs)
	if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 2*bs), 0); err != nil {
		t.Fatal(err)
	}
	markFull(t, img)
	if err := img.Trim(bs+512, 512); err != nil {
		t.Fatal(err)
	}
	wantBatmap(t, f, 0b10000000, "child: a sector of block 1 trimmed")
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	checkFileClean(t, f)
}

// TestAllocateClearsStaleBatmapBit: a bit left set over an unallocated
// block (damage) is cleared before the engine allocates the block.
func TestAllocateClearsStaleBatmapBit(t *testing.T) {
	const bs = 1 << 20
	f, img := newTapImage(t, TypeDynamic, 2*bs, bs)
	bm := img.sparse.batmap
	bm.mu.Lock()
	setBits(bm.bits, 1, 2, true)
	err := img.sparse.writeBatmapLocked([]int64{0})
	bm.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	wantBatmap(t, f, 0b01000000, "damaged")
	if _, err := img.WriteAt([]byte{1}, bs); err != nil {
		t.Fatal(err)
	}
	wantBatmap(t, f, 0, "block 1 allocated")
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	checkFileClean(t, f)
}

// messBatmap rewrites the durable batmap of the closed image in f with
// mess applied to the map (and a checksum that matches, unless mess
// returns false) and returns the damaged file.
func messBatmap(t *testing.T, f *crashfile.File, mess func(m []byte) bool) *crashfile.File {
	t.Helper()
	b := f.Bytes()
	img, err := OpenFile(crashfile.FromBytes(b), "img", Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	bm := img.sparse.batmap
	img.Close()
	m := b[bm.hdr.MapOffset:][:bm.hdr.MapBytes()]
	h := bm.hdr
	if mess(m) {
		h.Checksum = batmapChecksum(m[:batmapSumBytes(uint64(img.Size()))], h.Version)
	}
	raw := h.Marshal()
	copy(b[bm.hdrOff:], raw[:])
	return crashfile.FromBytes(b)
}

func TestCheckAndRepairBatmap(t *testing.T) {
	const bs = 1 << 20
	f, img := newTapImage(t, TypeDynamic, 4*bs, bs)
	if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 2*bs), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte{1}, 2*bs); err != nil { // block 2 partial
		t.Fatal(err)
	}
	markFull(t, img)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		code  string
		stale int
		mess  func(m []byte) bool
	}{
		{"partial block marked full", CodeBatmapStale, 1, func(m []byte) bool { m[0] |= 0b00100000; return true }},
		{"unallocated blocks marked full", CodeBatmapStale, 1, func(m []byte) bool { m[0] |= 0b00010000; return true }},
		{"both", CodeBatmapStale, 2, func(m []byte) bool { m[0] |= 0b00110000; return true }},
		{"checksum", CodeBatmapInvalid, 1, func(m []byte) bool { m[0] ^= 0b00000001; return false }},
		{"cookie", CodeBatmapInvalid, 1, func(m []byte) bool { return true }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := messBatmap(t, f, c.mess)
			if c.name == "cookie" {
				b := d.Bytes()
				img, _ := OpenFile(crashfile.FromBytes(b), "img", Options{ReadOnly: true})
				b[img.sparse.batmap.hdrOff] = 'x'
				img.Close()
				d = crashfile.FromBytes(b)
			}
			rep, err := Check(d, CheckOptions{})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, p := range rep.Problems {
				if p.Code != c.code || !p.Fixable || p.Fatal != (c.code == CodeBatmapStale) {
					t.Fatalf("problem %s", p)
				}
				n++
			}
			if n != c.stale {
				t.Fatalf("%d problems, want %d: %v", n, c.stale, rep.Problems)
			}
			did, err := RepairFile(d, "img", RepairOptions{})
			if err != nil || len(did) != 1 {
				t.Fatalf("repair: %q %v", did, err)
			}
			checkFileClean(t, d)
			if bits, ok := diskBatmap(t, d.Bytes()); !ok || bits[0] != 0b11000000 {
				t.Fatalf("rebuilt batmap %08b (trusted %v), want the two full blocks", bits[0], ok)
			}
		})
	}
}

// TestBatmapVersion11Maybe: a creator version of 1.1 has a batmap only if
// one reads after the BAT, as libvhd decides; without one, nothing is
// reported or kept.
func TestBatmapVersion11Maybe(t *testing.T) {
	f := crashfile.New()
	old := Creator{App: [4]byte{'t', 'a', 'p', 0}, Version: 0x00010001}
	img, err := CreateFile(f, "img", CreateOptions{Type: TypeDynamic, Size: 8 << 20, Creator: &old})
	if err != nil {
		t.Fatal(err)
	}
	if !img.sparse.batmap.trusted() {
		t.Fatal("1.1 image with a batmap: not found")
	}
	img.Close()
	b := f.Bytes()
	b[img.sparse.batmap.hdrOff] = 'x'
	d := crashfile.FromBytes(b)
	img, err = OpenFile(d, "img", Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if img.sparse.batmap != nil {
		t.Fatal("1.1 image without a batmap: one found")
	}
	img.Close()
	checkFileClean(t, d)
}

// checkFileClean fails the test unless Check finds nothing in f.
func checkFileClean(t *testing.T, f *crashfile.File) {
	t.Helper()
	rep, err := Check(f.Reopen(), CheckOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %v", err, rep.Problems)
	}
}
