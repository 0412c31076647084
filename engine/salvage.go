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
}

func (r *LostReport) add(off, n int64, why string) {
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

// zeroPastEOF is a salvage open's file: reads past its end return
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

// salvageBAT drops the entries batProblems found and lists what they
// cost. A block past the end is kept (its sectors before the end still
// read), and the part of it past the end is lost.
func (s *sparse) salvageBAT(fileSize int64) {
	dataEnd := s.img.dataLimit(fileSize)
	s.salvageEnd = dataEnd
	errs := batProblems(s.bat, s.tableOff, s.bitmapSize+s.blockSize, dataEnd, s.reserved, len(s.bat)+len(s.reserved)+1)
	for _, err := range errs {
		var ce *CorruptError
		if !errors.As(err, &ce) {
			continue
		}
		b := (ce.Offset - s.tableOff) / 4
		start := b << s.blockShift
		n := min(s.blockSize, s.size-start)
		if ce.Code != CodeBATOutOfRange {
			s.bat[b] = batUnused
			s.lost.add(start, n, "the block overlaps another block or a structure of the file")
			continue
		}
		data := int64(s.bat[b])*SectorSize + s.bitmapSize
		if data > dataEnd {
			s.lost.add(start, n, "the block lies past the end of the file")
			continue
		}
		keep := (dataEnd - data) / SectorSize * SectorSize
		s.lost.add(start+keep, n-keep, "the block runs past the end of the file")
	}
	s.lost.sort()
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
	start := b << s.blockShift
	s.lost.add(start, min(s.blockSize, s.size-start), "its BAT entry is zero (a hole in the table?)")
}

// checkSalvage refuses a salvage open that could write.
func checkSalvage(opts Options) error {
	if opts.Salvage && !opts.ReadOnly {
		return fmt.Errorf("vhd: a salvage open reads only: open read-only")
	}
	return nil
}
