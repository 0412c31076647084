package engine

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Salvage: opening a damaged dynamic or differencing image to copy what
// can still be read (vhd convert --salvage). The usual open refuses an
// image whose BAT puts a block past the end of the file (a download cut
// short, a copy onto a full disk) or over a structure or another block;
// qemu-img refuses it too. A salvage open is read-only and keeps going:
//
//   - the file reads as zeros past its end, so a block cut by the end
//     keeps the sectors before the cut, and one whose bitmap is gone
//     reads as never written;
//   - a block over a structure or over another block, or whose entry is
//     zero (a hole in the table), is dropped: never written;
//   - where the footer at the end is lost too, a block whose bitmap the
//     file holds as a hole is listed (bitmap_hole.go);
//
// and lists what it could not read (Lost). A part never written reads
// as zeros, or in a differencing image as its parent's data.

// maxLostRanges bounds the list of lost ranges; the bytes past it are
// still counted (LostReport.MoreBytes).
const maxLostRanges = 10000

// LostRange is a part of the disk a salvage open could not read.
type LostRange struct {
	Off int64 `json:"offset"` // in the disk, bytes
	Len int64 `json:"length"`
	// Why says what was wrong: "past the end of the file", "overlaps
	// ...".
	Why string `json:"why"`
}

// LostReport is what a salvage open could not read.
type LostReport struct {
	Ranges []LostRange
	// Bytes is the total of every range, listed or not.
	Bytes int64
	// MoreBytes is the part of Bytes in ranges past the list's bound.
	MoreBytes int64
	// disk is the disk's size: a Virtual PC or qemu image shows less
	// than its blocks cover (Footer.DiskSize), and what it does not
	// show is not lost.
	disk int64
}

func (r *LostReport) add(off, n int64, why string) {
	n = min(n, r.disk-off)
	if n <= 0 {
		return
	}
	r.Bytes += n
	if k := len(r.Ranges) - 1; k >= 0 && r.Ranges[k].Why == why && r.Ranges[k].Off+r.Ranges[k].Len == off {
		r.Ranges[k].Len += n
		return
	}
	if len(r.Ranges) >= maxLostRanges {
		r.MoreBytes += n
		return
	}
	r.Ranges = append(r.Ranges, LostRange{Off: off, Len: n, Why: why})
}

// sort puts the ranges in disk order, joining neighbours of one cause.
func (r *LostReport) sort() {
	slices.SortFunc(r.Ranges, func(a, b LostRange) int { return cmp.Compare(a.Off, b.Off) })
	out := r.Ranges[:0]
	for _, x := range r.Ranges {
		if k := len(out) - 1; k >= 0 && out[k].Why == x.Why && out[k].Off+out[k].Len == x.Off {
			out[k].Len += x.Len
			continue
		}
		out = append(out, x)
	}
	r.Ranges = out
}

// Lost is what a salvage open (Options.Salvage) could not read; nil
// for any other open, and for an image with nothing lost.
func (img *Image) Lost() *LostReport {
	if img.sparse == nil || img.sparse.lost == nil || img.sparse.lost.Bytes == 0 {
		return nil
	}
	return img.sparse.lost
}

// zeroPastEOF is a salvage open's file for a dynamic or differencing
// image (a fixed one has no blocks to cut): reads past its end return
// zeros, as if the file went on; it is never written.
type zeroPastEOF struct{ File }

func (z zeroPastEOF) ReadAt(p []byte, off int64) (int, error) {
	n, err := z.File.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return len(p), nil
	}
	return n, err
}

func (z zeroPastEOF) WriteAt([]byte, int64) (int, error) { return 0, ErrReadOnly }

// NextData passes SEEK_DATA through, where the file has it (readBAT's
// holdsAll); past the end there is no data, only zeros.
func (z zeroPastEOF) NextData(off int64) (int64, int64, error) {
	if ds, ok := z.File.(dataSeeker); ok {
		return ds.NextData(off)
	}
	return 0, 0, ErrUnsupported
}

// salvageBAT places every allocated block, as batProblems does for the
// usual open, but drops what is misplaced instead of refusing, and
// lists each block it drops or cuts once:
//
//   - a block whose bitmap is not wholly in the file is dropped;
//   - a block over a structure (footer copy, header, BAT, locators,
//     batmap) is dropped;
//   - blocks over each other are all dropped: which of them holds the
//     data cannot be told, and reading one's data at another's place
//     would be wrong data, not lost data;
//   - a block cut by the end of the file is kept (its part before the
//     end checked like the rest); its part past the end is lost;
//   - a block whose bitmap the file holds as a hole is dropped
//     (bitmap_hole.go).
func (s *sparse) salvageBAT(fileSize int64) {
	dataEnd := s.img.dataLimit(fileSize)
	s.salvageEnd = dataEnd
	// First the blocks whose bitmap the file holds as a hole (those past
	// its end are placed below, and said so).
	s.bitmapHoles(s.f, s.img.footerFromCopy, func(b, off int64) bool {
		if off+s.bitmapSize <= dataEnd {
			s.drop(b, "its bitmap is a hole in the file, never written there: a download or copy that set the file's length first and did not finish?")
		}
		return true
	})
	type placed struct{ b, off, end int64 }
	var kept []placed
	for b, e := range s.bat {
		if e == batUnused {
			continue
		}
		off := int64(e) * SectorSize
		end := min(off+s.bitmapSize+s.blockSize, dataEnd)
		switch {
		case off+s.bitmapSize > dataEnd:
			s.drop(int64(b), "the block lies past the end of the file")
		case s.overStructure(span{off, end - off, ""}):
			s.drop(int64(b), "the block lies over a structure of the file (header, table, locator)")
		default:
			kept = append(kept, placed{int64(b), off, end})
		}
	}
	slices.SortFunc(kept, func(a, b placed) int { return cmp.Compare(a.off, b.off) })
	for i := 0; i < len(kept); {
		j, reach := i+1, kept[i].end
		for j < len(kept) && kept[j].off < reach {
			reach = max(reach, kept[j].end)
			j++
		}
		for _, p := range kept[i:j] {
			if j-i > 1 {
				s.drop(p.b, "the block shares its place in the file with another block: which of them holds the data cannot be told")
				continue
			}
			data := p.off + s.bitmapSize
			if data+s.blockSize > dataEnd {
				start := p.b << s.blockShift
				keep := (dataEnd - data) / SectorSize * SectorSize
				s.lost.add(start+keep, min(s.blockSize, s.size-start)-keep, "the block runs past the end of the file")
			}
		}
		i = j
	}
	s.lost.sort()
}

// drop makes block b unallocated (it reads as never written) and lists
// it as lost, for why.
func (s *sparse) drop(b int64, why string) {
	s.bat[b] = batUnused
	s.lostBlock(b, why)
}

// lostBlock lists all of block b as lost, for why.
func (s *sparse) lostBlock(b int64, why string) {
	start := b << s.blockShift
	s.lost.add(start, min(s.blockSize, s.size-start), why)
}

// overStructure reports whether sp overlaps a structure of the file.
func (s *sparse) overStructure(sp span) bool {
	for _, r := range s.reserved {
		if sp.overlaps(r) {
			return true
		}
	}
	return false
}

// clearPastEnd clears, in a salvage open, the bits of a block's sectors
// whose data lies past the end of the file (wholly or in part), so they
// read as never written, as the lost list says: zeros, or the parent's
// data, not the zeros the file reads as past its end.
func (s *sparse) clearPastEnd(e uint32, bits []byte) {
	if s.salvageEnd == 0 {
		return
	}
	data := int64(e)*SectorSize + s.bitmapSize
	if data+s.blockSize <= s.salvageEnd {
		return
	}
	from := max(0, (s.salvageEnd-data)/SectorSize)
	setBits(bits, from, s.blockSize/SectorSize, false)
}

// zeroEntryLost is readBAT's onZero for a salvage open: a zero entry
// (a hole in the table) is a block never written, and lost.
func (s *sparse) zeroEntryLost(b int64) {
	s.lostBlock(b, "its BAT entry is zero (a hole in the table?)")
}

// checkSalvage refuses a salvage open that could write.
func checkSalvage(opts Options) error {
	if opts.Salvage && !opts.ReadOnly {
		return fmt.Errorf("vhd: a salvage open reads only: open read-only")
	}
	return nil
}
