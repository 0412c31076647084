package vhdfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"vhdkit/engine"
)

// Shrinking a GPT disk to its last partition (vhd resize --to-minimum,
// Resize-VHD -ToMinimumSize). The backup GPT fills the disk's last
// sectors, so it moves first, to just after the last partition:
//
//	before: | PMBR | hdr | array | partitions | free ... | array' | hdr' |
//	after:  | PMBR | hdr | array | partitions | array' | hdr' |
//	                                           ^arrLBA  ^lastLBA = new last sector
//
// The primary header then names the new backup (alternate LBA) and ends
// the usable space before it (last usable LBA), the protective MBR entry
// is fitted to the new size, the old backup is zeroed, and only then does
// the disk shrink (engine.Image.Resize, which refuses to cut off anything
// but zeros). Every write goes through the disk, as a guest's would.

// GPTDisk is what shrinking a GPT needs of a disk; an engine.Disk has
// it (writes are durable once Flush returns).
type GPTDisk interface {
	Size() int64
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Extents(off, n int64) ([]engine.Extent, error)
}

var _ GPTDisk = engine.Disk(nil)

// GPTShrink is the plan to shrink a GPT disk. PlanGPTShrink makes it,
// reading only; MoveBackup writes it.
type GPTShrink struct {
	// Size is the disk's size now; NewSize is the end of its last
	// partition plus the backup entry array and header.
	Size, NewSize int64
	// PartEnd is where the last partition ends, in bytes.
	PartEnd int64
	// Minimal says there is nothing to shrink: the disk is no bigger
	// than NewSize, or so little bigger that the backup table would move
	// onto itself.
	Minimal bool

	// moved says the primary header names the new backup already: a
	// move that was cut short after its second step.
	moved           bool
	arrLBA, lastLBA uint64
	array           []byte // the entry array, padded to whole sectors
	// primary and backup are the new header sectors.
	primary, backup [sectorSize]byte
	// pmbr is sector 0 with its protective entry fitted to NewSize, or
	// nil when it needs no change.
	pmbr []byte
	// stale is the old backup, zeroed once nothing names it.
	stale *staleBackup
	// cutFooter says the sector right after the new end holds the
	// footer of a fixed image's shrink cut short (engine.Image.Resize
	// writes it there before it cuts the file): zeroed with the stale
	// backup, as the resize puts it back.
	cutFooter bool
}

// staleBackup is where an old backup GPT lies: its array, then its header.
type staleBackup struct {
	arrLBA, arrSectors, hdrLBA uint64
}

func (s *staleBackup) holds(lba uint64) bool {
	return s != nil && (lba == s.hdrLBA || lba >= s.arrLBA && lba-s.arrLBA < s.arrSectors)
}

// ErrGPTUnsafe marks a GPT disk that is not shrunk because its table is
// damaged or laid out in a way the move does not handle.
var ErrGPTUnsafe = errors.New("the GPT cannot be moved safely")

func unsafeGPT(format string, a ...any) error {
	return fmt.Errorf("%w: %s; nothing changed (check the table with sgdisk -v)", ErrGPTUnsafe, fmt.Sprintf(format, a...))
}

// PlanGPTShrink reads d's GPT and works out how to shrink d to the end
// of its last partition. It reads only the table's sectors (MoveBackup
// checks the rest) and refuses a table whose primary header or array is
// damaged, whose backup disagrees with the primary or lies away from the
// disk's end, or whose entries reach past the usable sectors.
func PlanGPTShrink(d GPTDisk) (*GPTShrink, error) {
	size := d.Size()
	sr := sectorReader{r: d, size: size}
	t, err := ReadTable(d, size)
	if err != nil {
		return nil, err
	}
	if len(t.Problems) > 0 {
		return nil, unsafeGPT("the partition table is damaged (%s)", strings.Join(t.Problems, "; "))
	}
	if t.Kind != "gpt" {
		return nil, fmt.Errorf("no GPT partition table")
	}
	var sec0, sec1 [sectorSize]byte
	if err := sr.read(sec0[:], 0); err != nil {
		return nil, err
	}
	if err := sr.read(sec1[:], 1); err != nil {
		return nil, err
	}
	prim, err := ParseGPTHeader(sec1[:], size)
	if err != nil {
		return nil, unsafeGPT("the primary GPT header at sector 1 is damaged (%v)", err)
	}
	if prim.MyLBA != 1 {
		return nil, unsafeGPT("the primary GPT header at sector 1 says it is at sector %d", prim.MyLBA)
	}
	arr := make([]byte, prim.arraySectors()*sectorSize) // bounded by maxGPTArray
	if err := sr.read(arr, prim.EntriesLBA); err != nil {
		return nil, err
	}
	if _, err := ParseGPTEntries(prim, arr[:prim.ArrayLen()], size); err != nil {
		return nil, unsafeGPT("the primary GPT entry array is damaged (%v)", err)
	}
	end, err := lastPartitionLBA(prim, arr)
	if err != nil {
		return nil, err
	}
	p := &GPTShrink{Size: size, PartEnd: int64(end+1) * sectorSize, arrLBA: end + 1, array: arr}
	p.lastLBA = p.arrLBA + prim.arraySectors()
	p.NewSize = int64(p.lastLBA+1) * sectorSize
	p.primary, p.backup = newGPTHeaders(sec1, prim, p.arrLBA, p.lastLBA)
	if err := p.placeBackup(sr, prim); err != nil || p.Minimal {
		return p, err
	}
	p.pmbr = fitProtective(sec0, size, p.NewSize)
	return p, nil
}

// placeBackup finds the backup the primary names and checks it: at the
// disk's last sector (the move has not begun), or already where it goes
// (a move cut short: the old one may be left at the end, stale).
func (p *GPTShrink) placeBackup(sr sectorReader, prim *GPTHeader) error {
	oldLast := uint64(p.Size/sectorSize) - 1
	switch prim.AlternateLBA {
	case oldLast:
	case p.lastLBA:
		p.moved = true
	default:
		return unsafeGPT("the backup GPT header is at sector %d, not at the disk's last sector %d (sgdisk -e moves it there)", prim.AlternateLBA, oldLast)
	}
	bk, err := readBackupGPT(sr, prim, p.array[:prim.ArrayLen()])
	if err != nil {
		return err
	}
	if p.moved {
		if bk.EntriesLBA != p.arrLBA {
			return unsafeGPT("the backup GPT entry array is at sector %d, not right after the last partition (%d)", bk.EntriesLBA, p.arrLBA)
		}
		p.stale = findStaleBackup(sr, prim, p.lastLBA, oldLast)
		p.cutFooter = holdsFooterOf(sr, p.lastLBA+1, p.NewSize)
		return nil
	}
	if p.NewSize >= p.Size || p.lastLBA >= bk.EntriesLBA {
		p.Minimal = true
		return nil
	}
	p.stale = &staleBackup{arrLBA: bk.EntriesLBA, arrSectors: bk.arraySectors(), hdrLBA: oldLast}
	return nil
}

// lastPartitionLBA is the last sector of the last partition, over every
// entry of the array (not only the first maxGPTEntries ReadTable shows):
// shrinking past any partition would cut off its data.
func lastPartitionLBA(g *GPTHeader, arr []byte) (uint64, error) {
	var end uint64
	used := false
	var zero [16]byte
	for i := range int(g.EntryCount) {
		e := arr[i*int(g.EntrySize):]
		if bytes.Equal(e[:16], zero[:]) {
			continue
		}
		first, last := binary.LittleEndian.Uint64(e[gptEntryFirstOff:]), binary.LittleEndian.Uint64(e[gptEntryLastOff:])
		if last < first || first < g.FirstUsable || last > g.LastUsable {
			return 0, unsafeGPT("GPT entry %d (sectors %d-%d) lies outside the usable sectors %d-%d", i+1, first, last, g.FirstUsable, g.LastUsable)
		}
		end, used = max(end, last), true
	}
	if !used {
		return 0, fmt.Errorf("the GPT lists no partition, so nothing says where the data ends; give --size")
	}
	return end, nil
}

// readBackupGPT reads the backup header the primary names and its array,
// and checks that they say what the primary and its array arr do.
func readBackupGPT(sr sectorReader, prim *GPTHeader, arr []byte) (*GPTHeader, error) {
	var sec [sectorSize]byte
	if err := sr.read(sec[:], prim.AlternateLBA); err != nil {
		return nil, err
	}
	bk, err := ParseGPTHeader(sec[:], sr.size)
	if err != nil {
		return nil, unsafeGPT("the backup GPT header at sector %d is damaged (%v)", prim.AlternateLBA, err)
	}
	if why := gptDisagreement(prim, bk); why != "" {
		return nil, unsafeGPT("the primary and backup GPT headers disagree (%s)", why)
	}
	if bk.EntriesLBA <= prim.LastUsable || bk.EntriesLBA+bk.arraySectors() > bk.MyLBA {
		return nil, unsafeGPT("the backup GPT entry array at sector %d is not between the usable sectors and the backup header", bk.EntriesLBA)
	}
	barr := make([]byte, bk.ArrayLen()) // bounded by maxGPTArray
	if err := sr.read(barr, bk.EntriesLBA); err != nil {
		return nil, err
	}
	if _, err := ParseGPTEntries(bk, barr, sr.size); err != nil {
		return nil, unsafeGPT("the backup GPT entry array is damaged (%v)", err)
	}
	if !bytes.Equal(barr, arr) {
		return nil, unsafeGPT("the primary and backup GPT entry arrays differ")
	}
	return bk, nil
}

// gptDisagreement names the first field in which backup bk does not
// mirror primary prim, or is "".
func gptDisagreement(prim, bk *GPTHeader) string {
	switch {
	case bk.MyLBA != prim.AlternateLBA || bk.AlternateLBA != prim.MyLBA:
		return fmt.Sprintf("the backup says it is at sector %d with its primary at %d", bk.MyLBA, bk.AlternateLBA)
	case bk.FirstUsable != prim.FirstUsable || bk.LastUsable != prim.LastUsable:
		return fmt.Sprintf("usable sectors %d-%d against %d-%d", bk.FirstUsable, bk.LastUsable, prim.FirstUsable, prim.LastUsable)
	case bk.DiskGUID != prim.DiskGUID:
		return "disk GUID"
	case bk.EntryCount != prim.EntryCount || bk.EntrySize != prim.EntrySize:
		return fmt.Sprintf("%d entries of %d bytes against %d of %d", bk.EntryCount, bk.EntrySize, prim.EntryCount, prim.EntrySize)
	case bk.EntriesCRC != prim.EntriesCRC:
		return "the entry arrays differ"
	}
	return ""
}

// findStaleBackup recognises the old backup left at the disk's last
// sector by a move cut short: a header of this disk that says it is
// there. Its array may be zeroed already (it is zeroed before the
// header); anything else at the end is data, for checkTail to judge.
func findStaleBackup(sr sectorReader, prim *GPTHeader, newLast, oldLast uint64) *staleBackup {
	var sec [sectorSize]byte
	if sr.read(sec[:], oldLast) != nil {
		return nil
	}
	h, err := ParseGPTHeader(sec[:], sr.size)
	if err != nil || h.DiskGUID != prim.DiskGUID || h.MyLBA != oldLast || h.AlternateLBA != prim.MyLBA {
		return nil
	}
	if h.EntriesLBA <= newLast || h.EntriesLBA+h.arraySectors() > oldLast {
		return nil
	}
	return &staleBackup{arrLBA: h.EntriesLBA, arrSectors: h.arraySectors(), hdrLBA: oldLast}
}

// newGPTHeaders makes the primary header that names the backup at
// lastLBA, and that backup's header, from the primary sector now.
func newGPTHeaders(sec1 [sectorSize]byte, prim *GPTHeader, arrLBA, lastLBA uint64) (primary, backup [sectorSize]byte) {
	primary = sec1
	binary.LittleEndian.PutUint64(primary[gptAlternateOff:], lastLBA)
	binary.LittleEndian.PutUint64(primary[gptLastUsableOff:], arrLBA-1)
	binary.LittleEndian.PutUint32(primary[gptHeaderCRCOff:], gptHeaderCRC(primary[:], prim.HeaderSize))
	backup = primary
	binary.LittleEndian.PutUint64(backup[gptMyLBAOff:], lastLBA)
	binary.LittleEndian.PutUint64(backup[gptAlternateOff:], prim.MyLBA)
	binary.LittleEndian.PutUint64(backup[gptEntriesLBAOff:], arrLBA)
	binary.LittleEndian.PutUint32(backup[gptHeaderCRCOff:], gptHeaderCRC(backup[:], prim.HeaderSize))
	return primary, backup
}

// fitProtective returns sector 0 with its protective entry covering a
// disk of newSize, if it covered the whole disk of size (as a protective
// MBR does; a hybrid MBR's other entries are left alone), else nil.
func fitProtective(sec0 [sectorSize]byte, size, newSize int64) []byte {
	entries, ok := ParseMBR(sec0[:])
	if !ok {
		return nil
	}
	cover := func(n int64) uint32 { return uint32(min(n/sectorSize-1, math.MaxUint32)) }
	for i, e := range entries {
		if e.Type == gptProtective && e.FirstLBA == 1 && e.Count == cover(size) && cover(size) != cover(newSize) {
			binary.LittleEndian.PutUint32(sec0[mbrEntriesOff+mbrEntrySize*i+mbrEntryCountOff:], cover(newSize))
			return sec0[:]
		}
	}
	return nil
}

// holdsFooterOf says whether sector lba holds a VHD footer for a disk of
// size bytes.
func holdsFooterOf(sr sectorReader, lba uint64, size int64) bool {
	var sec [sectorSize]byte
	if sr.read(sec[:], lba) != nil {
		return false
	}
	ft, err := engine.ParseFooter(sec[:], int64(lba)*sectorSize)
	return err == nil && int64(ft.CurrentSize) == size
}
