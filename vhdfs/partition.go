package vhdfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"
)

// Partition tables, read from the first sectors of the disk (and the last,
// for the backup GPT header). Sectors are 512 bytes: VHD has no other
// sector size.
//
// MBR (sector 0):
//
//	+---------------------+------------------+-----+-----+-----+-----+------+
//	| boot code (446)     | entries 4 x 16 at 446, 462, 478, 494      | 55AA |
//	+---------------------+-------------------------------------------+------+
//	entry: status(1) chs(3) type(1) chs(3) first LBA(4 LE) sectors(4 LE)
//
// An extended entry (type 0x05, 0x0F, 0x85) points at a chain of EBRs,
// each an MBR-shaped sector whose first entry is a logical partition
// (relative to that EBR) and whose second points at the next EBR
// (relative to the extended partition's start). Logical partitions are
// numbered from 5, like Linux does.
//
// GPT (a protective MBR entry of type 0xEE, then LBA 1):
//
//	header: "EFI PART"(8) revision(4) header size(4 at 12) header CRC32(4 at 16)
//	        reserved(4) my LBA(8 at 24) alternate LBA(8 at 32)
//	        first usable(8 at 40) last usable(8 at 48) disk GUID(16 at 56)
//	        entries LBA(8 at 72) entry count(4 at 80) entry size(4 at 84)
//	        entries CRC32(4 at 88)
//	entry:  type GUID(16) unique GUID(16) first LBA(8 at 32)
//	        last LBA, inclusive (8 at 40) attributes(8 at 48) name UTF-16LE(72 at 56)
//
// All integers are little-endian. Every offset and length read from the
// disk is checked against the disk's size before use, and nothing read
// from the disk sizes an allocation by itself.

const (
	sectorSize = 512

	// maxGPTEntries is how many GPT entries are looked at: the usual
	// table size, and the bound on partition files.
	maxGPTEntries = 128
	// maxGPTArray bounds the entry array read to check its CRC.
	maxGPTArray = 1 << 20
	// maxLogical bounds an EBR chain.
	maxLogical = 128
)

// Where the MBR's entries are and where an entry's fields are, as drawn
// above; gptProtective is the type of a GPT disk's protective entry.
const (
	mbrEntriesOff    = 446
	mbrEntrySize     = 16
	mbrEntryTypeOff  = 4
	mbrEntryFirstOff = 8
	mbrEntryCountOff = 12
	gptProtective    = 0xEE
)

// Offsets of the GPT header's fields and of an entry's, as drawn above.
const (
	gptHeaderSizeOff  = 12
	gptHeaderCRCOff   = 16
	gptMyLBAOff       = 24
	gptAlternateOff   = 32
	gptFirstUsableOff = 40
	gptLastUsableOff  = 48
	gptDiskGUIDOff    = 56
	gptEntriesLBAOff  = 72
	gptEntryCountOff  = 80
	gptEntrySizeOff   = 84
	gptEntriesCRCOff  = 88
	gptMinHeaderSize  = 92

	gptEntryFirstOff = 32
	gptEntryLastOff  = 40
)

// Partition is one partition of the disk.
type Partition struct {
	// Number is Linux's: MBR primaries 1-4 by slot, logical partitions
	// from 5; GPT entries by slot from 1.
	Number int    `json:"number"`
	Start  int64  `json:"start"` // bytes
	Len    int64  `json:"length"`
	Type   string `json:"type"` // "0x83" for MBR, a GUID for GPT
	Name   string `json:"name,omitempty"`
}

// Table is a disk's partition table.
type Table struct {
	Kind       string      `json:"kind"` // "mbr", "gpt" or "" (none)
	Partitions []Partition `json:"partitions"`
	// Problems lists entries that were skipped and why.
	Problems []string `json:"problems,omitempty"`
}

// ReadTable reads the partition table of a disk of size bytes through r.
// A disk without a valid table gives an empty Table, not an error; an
// error means r failed.
func ReadTable(r io.ReaderAt, size int64) (*Table, error) {
	d := sectorReader{r: r, size: size}
	var mbr [sectorSize]byte
	if err := d.read(mbr[:], 0); errors.Is(err, errOutside) {
		return &Table{}, nil // less than one sector: no table
	} else if err != nil {
		return nil, err
	}
	entries, ok := ParseMBR(mbr[:])
	if !ok {
		return &Table{}, nil
	}
	for _, e := range entries {
		if e.Type == gptProtective {
			return readGPT(d)
		}
	}
	return readMBR(d, entries)
}

// MBREntry is one raw 16-byte MBR (or EBR) entry.
type MBREntry struct {
	Type            byte
	FirstLBA, Count uint32
}

// ParseMBR decodes the four entries of an MBR or EBR sector. ok is false
// without the 0x55AA signature.
func ParseMBR(b []byte) (entries [4]MBREntry, ok bool) {
	if len(b) < sectorSize || b[510] != 0x55 || b[511] != 0xAA {
		return entries, false
	}
	for i := range entries {
		e := b[mbrEntriesOff+mbrEntrySize*i : mbrEntriesOff+mbrEntrySize*(i+1)]
		entries[i] = MBREntry{Type: e[mbrEntryTypeOff], FirstLBA: binary.LittleEndian.Uint32(e[mbrEntryFirstOff:]), Count: binary.LittleEndian.Uint32(e[mbrEntryCountOff:])}
	}
	return entries, true
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0F || t == 0x85 }

// inDisk checks a run of sectors against the disk. Sector numbers come
// from 32- or 64-bit fields: compare in sectors first so nothing
// overflows.
func inDisk(first, count uint64, size int64) bool {
	sectors := uint64(size) / sectorSize
	return count > 0 && first < sectors && count <= sectors-first
}

func readMBR(d sectorReader, entries [4]MBREntry) (*Table, error) {
	t := &Table{Kind: "mbr"}
	var ext *MBREntry
	for i, e := range entries {
		if e.Type == 0 || e.Count == 0 {
			continue
		}
		if !inDisk(uint64(e.FirstLBA), uint64(e.Count), d.size) {
			t.Problems = append(t.Problems, fmt.Sprintf("MBR entry %d (sectors %d+%d) lies outside the disk", i+1, e.FirstLBA, e.Count))
			continue
		}
		if isExtended(e.Type) {
			if ext == nil {
				ext = &entries[i]
			}
			continue
		}
		t.Partitions = append(t.Partitions, Partition{Number: i + 1, Start: int64(e.FirstLBA) * sectorSize, Len: int64(e.Count) * sectorSize, Type: fmt.Sprintf("0x%02x", e.Type)})
	}
	if ext != nil {
		if err := readLogical(d, t, uint64(ext.FirstLBA), uint64(ext.Count)); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// readLogical walks the EBR chain of the extended partition at sectors
// [extStart, extStart+extLen). The chain is bounded in length, must stay
// inside the extended partition and must not revisit an EBR.
func readLogical(d sectorReader, t *Table, extStart, extLen uint64) error {
	seen := map[uint64]bool{}
	ebr := extStart
	var sec [sectorSize]byte
	for n := 5; ; n++ {
		if n-5 >= maxLogical {
			t.Problems = append(t.Problems, fmt.Sprintf("more than %d logical partitions: the rest are ignored", maxLogical))
			return nil
		}
		if seen[ebr] {
			t.Problems = append(t.Problems, fmt.Sprintf("EBR chain loops back to sector %d", ebr))
			return nil
		}
		seen[ebr] = true
		if err := d.read(sec[:], ebr); errors.Is(err, errOutside) {
			t.Problems = append(t.Problems, fmt.Sprintf("EBR at sector %d: %v", ebr, err))
			return nil
		} else if err != nil {
			return err
		}
		e, ok := ParseMBR(sec[:])
		if !ok {
			t.Problems = append(t.Problems, fmt.Sprintf("EBR at sector %d has no signature", ebr))
			return nil
		}
		// The logical partition is relative to its EBR and must lie in
		// the extended partition.
		if l := e[0]; l.Type != 0 && l.Count != 0 {
			first := ebr + uint64(l.FirstLBA)
			if first >= extStart && first-extStart < extLen && uint64(l.Count) <= extLen-(first-extStart) {
				t.Partitions = append(t.Partitions, Partition{Number: n, Start: int64(first) * sectorSize, Len: int64(l.Count) * sectorSize, Type: fmt.Sprintf("0x%02x", l.Type)})
			} else {
				t.Problems = append(t.Problems, fmt.Sprintf("logical partition %d (sectors %d+%d) lies outside its extended partition", n, first, l.Count))
			}
		}
		next := e[1]
		if !isExtended(next.Type) || next.FirstLBA == 0 {
			return nil
		}
		if uint64(next.FirstLBA) >= extLen {
			t.Problems = append(t.Problems, fmt.Sprintf("EBR link to sector %d lies outside the extended partition", extStart+uint64(next.FirstLBA)))
			return nil
		}
		ebr = extStart + uint64(next.FirstLBA)
	}
}

// GPTHeader is the part of a GPT header the parser uses.
type GPTHeader struct {
	HeaderSize              uint32
	MyLBA, AlternateLBA     uint64
	FirstUsable, LastUsable uint64
	DiskGUID                [16]byte
	EntriesLBA              uint64
	EntryCount, EntrySize   uint32
	EntriesCRC              uint32
}

// gptHeaderCRC is the CRC32 of the header's first hs bytes with its CRC
// field taken as zero. hs is at most a sector.
func gptHeaderCRC(b []byte, hs uint32) uint32 {
	var h [sectorSize]byte
	copy(h[:], b[:hs])
	clear(h[gptHeaderCRCOff : gptHeaderCRCOff+4])
	return crc32.ChecksumIEEE(h[:hs])
}

// ParseGPTHeader decodes and validates a GPT header sector of a disk of
// size bytes: signature, header size, header CRC, and that the entry
// array lies inside the disk and is small enough to read.
func ParseGPTHeader(b []byte, size int64) (*GPTHeader, error) {
	if len(b) < sectorSize || !bytes.Equal(b[:8], []byte("EFI PART")) {
		return nil, fmt.Errorf("no GPT signature")
	}
	hs := binary.LittleEndian.Uint32(b[gptHeaderSizeOff:])
	if hs < gptMinHeaderSize || hs > sectorSize {
		return nil, fmt.Errorf("GPT header size %d", hs)
	}
	if got, want := gptHeaderCRC(b, hs), binary.LittleEndian.Uint32(b[gptHeaderCRCOff:]); got != want {
		return nil, fmt.Errorf("GPT header CRC %#08x, want %#08x", got, want)
	}
	g := &GPTHeader{
		HeaderSize:   hs,
		MyLBA:        binary.LittleEndian.Uint64(b[gptMyLBAOff:]),
		AlternateLBA: binary.LittleEndian.Uint64(b[gptAlternateOff:]),
		FirstUsable:  binary.LittleEndian.Uint64(b[gptFirstUsableOff:]),
		LastUsable:   binary.LittleEndian.Uint64(b[gptLastUsableOff:]),
		EntriesLBA:   binary.LittleEndian.Uint64(b[gptEntriesLBAOff:]),
		EntryCount:   binary.LittleEndian.Uint32(b[gptEntryCountOff:]),
		EntrySize:    binary.LittleEndian.Uint32(b[gptEntrySizeOff:]),
		EntriesCRC:   binary.LittleEndian.Uint32(b[gptEntriesCRCOff:]),
	}
	copy(g.DiskGUID[:], b[gptDiskGUIDOff:])
	if g.EntrySize < 128 || g.EntrySize%8 != 0 || g.EntrySize > maxGPTArray {
		return nil, fmt.Errorf("GPT entry size %d", g.EntrySize)
	}
	if g.EntryCount == 0 || uint64(g.EntryCount)*uint64(g.EntrySize) > maxGPTArray {
		return nil, fmt.Errorf("GPT entry array of %d x %d bytes", g.EntryCount, g.EntrySize)
	}
	if !inDisk(g.EntriesLBA, g.arraySectors(), size) {
		return nil, fmt.Errorf("GPT entry array at sector %d lies outside the disk", g.EntriesLBA)
	}
	return g, nil
}

// ArrayLen is the size in bytes of the header's entry array.
func (g *GPTHeader) ArrayLen() int { return int(g.EntryCount) * int(g.EntrySize) }

// arraySectors is how many sectors the entry array fills.
func (g *GPTHeader) arraySectors() uint64 {
	return (uint64(g.EntryCount)*uint64(g.EntrySize) + sectorSize - 1) / sectorSize
}

// ParseGPTEntries checks the entry array's CRC and decodes the first
// maxGPTEntries entries, keeping those in use and inside the disk.
func ParseGPTEntries(g *GPTHeader, arr []byte, size int64) (*Table, error) {
	if len(arr) != g.ArrayLen() {
		return nil, fmt.Errorf("GPT entry array is %d bytes, want %d", len(arr), g.ArrayLen())
	}
	if got := crc32.ChecksumIEEE(arr); got != g.EntriesCRC {
		return nil, fmt.Errorf("GPT entry array CRC %#08x, want %#08x", got, g.EntriesCRC)
	}
	t := &Table{Kind: "gpt"}
	for i := 0; i < int(g.EntryCount) && i < maxGPTEntries; i++ {
		e := arr[i*int(g.EntrySize):]
		var zero [16]byte
		if bytes.Equal(e[:16], zero[:]) {
			continue
		}
		first, last := binary.LittleEndian.Uint64(e[gptEntryFirstOff:]), binary.LittleEndian.Uint64(e[gptEntryLastOff:])
		if last < first || !inDisk(first, last-first+1, size) {
			t.Problems = append(t.Problems, fmt.Sprintf("GPT entry %d (sectors %d-%d) lies outside the disk", i+1, first, last))
			continue
		}
		t.Partitions = append(t.Partitions, Partition{
			Number: i + 1, Start: int64(first) * sectorSize, Len: int64(last-first+1) * sectorSize,
			Type: guidString(e[:16]), Name: utf16Name(e[56:128]),
		})
	}
	return t, nil
}

// readGPT reads the primary GPT header (sector 1), or the backup at the
// last sector if the primary is damaged. A disk too small to hold them
// has no table: a problem of the table, not a failure to read.
func readGPT(d sectorReader) (*Table, error) {
	var problems []string
	headers := []uint64{1}
	if sectors := uint64(d.size / sectorSize); sectors > 2 {
		headers = append(headers, sectors-1) // a backup apart from sectors 0 and 1
	}
	for _, lba := range headers {
		t, err := readGPTAt(d, lba)
		if errors.Is(err, errGPT) || errors.Is(err, errOutside) {
			problems = append(problems, fmt.Sprintf("GPT header at sector %d: %v", lba, err))
			continue
		}
		if err != nil {
			return nil, err
		}
		t.Problems = append(problems, t.Problems...)
		return t, nil
	}
	return &Table{Problems: problems}, nil
}

// errGPT marks a GPT header or entry array that does not parse.
var errGPT = errors.New("invalid GPT")

// readGPTAt reads the GPT whose header is at sector lba.
func readGPTAt(d sectorReader, lba uint64) (*Table, error) {
	var sec [sectorSize]byte
	if err := d.read(sec[:], lba); err != nil {
		return nil, err
	}
	g, err := ParseGPTHeader(sec[:], d.size)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errGPT, err)
	}
	arr := make([]byte, g.ArrayLen()) // bounded by maxGPTArray
	if err := d.read(arr, g.EntriesLBA); err != nil {
		return nil, err
	}
	t, err := ParseGPTEntries(g, arr, d.size)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errGPT, err)
	}
	return t, nil
}

// guidString formats a GUID stored mixed-endian, as GPT does.
func guidString(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// errOutside marks a read the table asked for that lies outside the
// disk: a damaged or hostile table, or a disk too small for its table.
var errOutside = errors.New("outside the disk")

// sectorReader reads whole sectors of a disk of size bytes. Every
// sector number the tables name reaches the disk through read, which
// checks it against the disk's size first: a read past the end is
// errOutside, told apart from a failure of the disk itself.
type sectorReader struct {
	r    io.ReaderAt
	size int64
}

// read fills p from sector lba on; p, rounded up to whole sectors, must
// lie inside the disk.
func (d sectorReader) read(p []byte, lba uint64) error {
	n := (uint64(len(p)) + sectorSize - 1) / sectorSize
	if !inDisk(lba, n, d.size) {
		return fmt.Errorf("sector %d (+%d): %w of %d sectors", lba, n, errOutside, d.size/sectorSize)
	}
	got, err := d.r.ReadAt(p, int64(lba)*sectorSize)
	if got == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read partition table at offset %#x: %w", int64(lba)*sectorSize, err)
}
