package engine

import (
	"encoding/binary"
	"testing"
	"time"

	"vhdkit/engine/crashfile"
)

// packedImage builds, in code, an image laid out as blktap lays out its
// own (vhd-util create, snapshot): footer copy, header, BAT, batmap,
// parent locators of 512 bytes each, then blocks packed one after the
// other, with no room anywhere. The first len(data) bytes of the disk
// are written (whole blocks, which get their batmap bits set), so a
// relocation finds no free space before the first block.
func packedImage(t *testing.T, typ DiskType, size, bs int64, parent *ParentInfo, data []byte) *crashfile.File {
	t.Helper()
	ft := newFooter(CreateOptions{Type: typ, Size: size, UUID: UUID{4}, Time: time.Unix(1e9, 0), Creator: &tapCreator})
	ft.DataOffset = FooterSize
	ft.Hidden = 1 // Xen's flag, which a relocation must keep
	entries := uint32((size + bs - 1) / bs)
	h := DynamicHeader{DataOffset: ^uint64(0), TableOffset: FooterSize + HeaderSize, Version: formatVersion, MaxTableEntries: entries, BlockSize: uint32(bs)}
	end := int64(h.TableOffset) + batBytes(entries)
	bmw, end := newBatmap(end, entries, uint64(size))
	var b []byte
	grow := func(n int64) {
		if int64(len(b)) < n {
			b = append(b, make([]byte, n-int64(len(b)))...)
		}
	}
	put := func(off int64, p []byte) { grow(off + int64(len(p))); copy(b[off:], p) }
	for _, w := range bmw {
		put(w.off, w.data)
	}
	if parent != nil {
		h.ParentUUID, h.ParentTimestamp, h.ParentName = parent.UUID, parent.Timestamp, parent.Name
		for i, lp := range parent.Locators {
			d := EncodeLocatorPath(lp.Code, lp.Path)
			copy(h.Locators[i].Code[:], lp.Code)
			h.Locators[i].DataOffset, h.Locators[i].DataLength, h.Locators[i].DataSpace = uint64(end), uint32(len(d)), SectorSize
			put(end, d)
			end += SectorSize
		}
	}
	bat := unusedBAT(entries)
	bmSize := bitmapBytes(uint32(bs))
	mapOff := int64(binary.BigEndian.Uint64(bmw[0].data[offBatmapOffset:]))
	for blk := int64(0); blk*bs < int64(len(data)); blk++ {
		binary.BigEndian.PutUint32(bat[4*blk:], uint32(end/SectorSize))
		ones := make([]byte, bmSize)
		setBits(ones, 0, bs/SectorSize, true)
		put(end, ones)
		put(end+bmSize, data[blk*bs:min(int64(len(data)), (blk+1)*bs)])
		setBits(b[mapOff:], blk, blk+1, true)
		end += bmSize + bs
	}
	grow(end)
	bh, _ := ParseBatmapHeader(b[bmw[0].off:][:BatmapHeaderSize], 0)
	bh.Checksum = batmapChecksum(b[mapOff:][:batmapSumBytes(uint64(size))], bh.Version)
	braw, hraw, fraw := bh.Marshal(), h.Marshal(), ft.Marshal()
	put(bmw[0].off, braw[:])
	put(int64(h.TableOffset), bat)
	put(FooterSize, hraw[:])
	put(0, fraw[:])
	put(end, fraw[:])
	return crashfile.FromBytes(b)
}

// TestPackedImageIsBlktaps: the builder's images check clean and carry
// a trusted batmap marking the written blocks, as blktap's do.
func TestPackedImageIsBlktaps(t *testing.T) {
	data := randBytesN(2 << 20)
	f := packedImage(t, TypeDifferencing, 4<<20, 1<<20, &ParentInfo{UUID: UUID{8}, Name: "old.vhd", Locators: []LocatorPath{{LocatorW2ru, `.\old.vhd`}}}, data)
	checkFileClean(t, f)
	if bits, ok := diskBatmap(t, f.Bytes()); !ok || bits[0] != 0b11000000 {
		t.Fatalf("batmap %08b trusted=%v", bits[0], ok)
	}
	img, err := OpenFile(f.Reopen(), "packed", Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.sparse.firstBlock() != int64(img.sparse.reservedEnd) {
		t.Fatalf("first block at %#x, metadata ends at %#x: not packed", img.sparse.firstBlock(), img.sparse.reservedEnd)
	}
}

func randBytesN(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>9 + 1)
	}
	return p
}
