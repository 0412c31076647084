package engine

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Repair fixes what can be fixed without guessing at data: a damaged
// footer at the end (rewritten from the copy at offset 0), a damaged or
// stale copy at offset 0 (rewritten from the footer at the end), space
// past the last allocated block (blocks whose allocation never reached a
// flush: cut off), bytes between a fixed image's data and its footer
// (cut), and sectors holding data their bitmap bit disowns (the
// bit is set, so what readers saw stays what they see). It returns what
// it did; it refuses, changing nothing, when the image has damage it
// cannot fix.
func Repair(path string, opts RepairOptions) ([]string, error) {
	osf, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer osf.Close()
	unlock, err := lockFile(osf, path, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return RepairFile(OSFile(osf), path, opts)
}

// RepairOptions select the slower repairs.
type RepairOptions struct {
	// Bitmaps reads every allocated block to find sectors holding data
	// their bitmap disowns.
	Bitmaps bool
}

// RepairFile is Repair on an open file.
func RepairFile(f File, name string, opts RepairOptions) ([]string, error) {
	rep, err := Check(f, CheckOptions{})
	if err != nil {
		return nil, err
	}
	var unfixable []string
	for _, p := range rep.Problems {
		if p.Fatal && !p.Fixable {
			unfixable = append(unfixable, p.String())
		}
	}
	if len(unfixable) > 0 {
		return nil, fmt.Errorf("%s: %w: cannot repair safely, nothing changed:\n  %s", name, ErrCorrupt, strings.Join(unfixable, "\n  "))
	}
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	img := &Image{f: f, name: name, unlock: func() {}, log: slog.New(slog.DiscardHandler)}
	if err := img.readFooter(size); err != nil {
		return nil, err
	}
	if img.footer.DiskType == TypeFixed {
		return repairFixedGap(f, img.footer, size)
	}
	s, err := parseSparse(img, size)
	if err != nil {
		return nil, err
	}
	var did []string
	if opts.Bitmaps {
		fixed, err := s.repairBitmaps()
		if err != nil {
			return did, err
		}
		if fixed > 0 {
			what := "marked the data present"
			if s.differencing {
				what = "zeroed the sectors (the parent shows there, as before)"
			}
			did = append(did, fmt.Sprintf("%d blocks held data their bitmap disowned: %s", fixed, what))
		}
	}
	if tail := s.orphanTail(size - FooterSize); img.footerFromCopy || tail > 0 {
		if err := s.rewriteTail(); err != nil {
			return did, err
		}
		if img.footerFromCopy {
			did = append(did, fmt.Sprintf("rewrote the damaged footer at the end of the file (offset %#x) from the copy at offset 0", s.footerOff))
		}
		if tail > 0 {
			did = append(did, fmt.Sprintf("cut %d bytes of unreferenced blocks from the end of the file", tail))
		}
	}
	if err := s.repairFooterCopy(); err != nil {
		return did, err
	} else if !img.footerFromCopy && (hasProblem(rep, CodeFooterCopyDamaged) || hasProblem(rep, CodeFooterCopyDiffers)) {
		did = append(did, "rewrote the footer copy at offset 0 from the footer at the end")
	}
	return did, f.Sync()
}

func hasProblem(r *Report, code string) bool {
	for _, p := range r.Problems {
		if p.Code == code {
			return true
		}
	}
	return false
}

// repairFooterCopy writes the footer in use to offset 0.
func (s *sparse) repairFooterCopy() error {
	raw := s.img.footerBytes()
	var cur [FooterSize]byte
	if _, err := s.f.ReadAt(cur[:], 0); err != nil {
		return ioError("read footer copy", 0, err)
	}
	if cur == raw {
		return nil
	}
	if _, err := s.f.WriteAt(raw[:], 0); err != nil {
		return ioError("write footer copy", 0, err)
	}
	return nil
}

// repairBitmaps fixes sectors holding data their bitmap bit disowns and
// returns how many blocks it changed. A dynamic image is read without its
// bitmaps, so that data is what readers saw: the bit is set. A
// differencing image shows its parent there, and the data is a write
// that never reached a flush (its bit would have): the sector is zeroed,
// as the format requires of absent sectors, and readers still see the
// parent.
func (s *sparse) repairBitmaps() (int, error) {
	bits := make([]byte, s.bitmapSize)
	var data []byte // made at the first block, as in checkBitmaps
	fixed := 0
	for b := range s.bat {
		e := s.entry(int64(b))
		if e == batUnused {
			continue
		}
		if data == nil {
			data = make([]byte, s.blockSize)
		}
		if err := s.pread(bits, int64(e)*SectorSize); err != nil {
			return fixed, err
		}
		if err := s.pread(data, s.dataOff(e)); err != nil {
			return fixed, err
		}
		changed := false
		for sec := int64(0); sec < s.sectorsIn(int64(b)); sec++ {
			if bitSet(bits, sec) || isZero(data[sec*SectorSize:(sec+1)*SectorSize]) {
				continue
			}
			changed = true
			if s.differencing {
				off := s.dataOff(e) + sec*SectorSize
				if _, err := s.f.WriteAt(zeroBuf[:SectorSize], off); err != nil {
					return fixed, ioError("zero disowned sector", off, err)
				}
				continue
			}
			setBits(bits, sec, sec+1, true)
		}
		if changed && !s.differencing {
			if _, err := s.f.WriteAt(bits, int64(e)*SectorSize); err != nil {
				return fixed, ioError("write bitmap", int64(e)*SectorSize, err)
			}
		}
		if changed {
			fixed++
		}
	}
	return fixed, nil
}
