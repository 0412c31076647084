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
// (cut), sectors holding data their bitmap bit disowns (zeroed: no
// reader of the image sees that data, and readers that ignore bitmaps
// then agree), and blktap's batmap when it is stale or damaged (rebuilt
// from the bitmaps, batmap_check.go). It returns what it did; it refuses, changing nothing,
// when the image has damage it cannot fix.
func Repair(path string, opts RepairOptions) ([]string, error) {
	osf, err := OpenChecked(path, os.O_RDWR, true)
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
	// Bitmaps changes nothing any more: Repair always zeroes data under
	// clear bitmap bits (see zeroStray). Kept so callers that set it
	// still build.
	Bitmaps bool
}

// RepairFile is Repair on an open file.
func RepairFile(f File, name string, opts RepairOptions) ([]string, error) {
	rep, err := checkNamed(f, name, CheckOptions{})
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
		return nil, fmt.Errorf("%s: %w: cannot repair safely, nothing changed: %s", name, ErrCorrupt, listSome(unfixable, 1))
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
	blocks, bytes, err := s.zeroStray()
	if err != nil {
		return did, err
	}
	if blocks > 0 {
		shows := "zeros"
		if s.differencing {
			shows = "the parent's data"
		}
		did = append(did, fmt.Sprintf("zeroed %d bytes in %d blocks that held data under clear bitmap bits (writes that never reached a flush; reads showed %s there, and still do)", bytes, blocks, shows))
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
	if hasFixable(rep, CodeBatmapStale) || hasFixable(rep, CodeBatmapInvalid) {
		what, err := s.rebuildBatmap()
		if err != nil {
			return did, err
		}
		did = append(did, what)
	}
	if err := s.repairFooterCopy(); err != nil {
		return did, err
	} else if !img.footerFromCopy && (hasProblem(rep, CodeFooterCopyDamaged) || hasProblem(rep, CodeFooterCopyDiffers)) {
		did = append(did, "rewrote the footer copy at offset 0 from the footer at the end")
	}
	return did, f.Sync()
}

func hasFixable(r *Report, code string) bool {
	for _, p := range r.Problems {
		if p.Code == code && p.Fixable {
			return true
		}
	}
	return false
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

// zeroStray writes zeros over the data the file holds under clear
// bitmap bits (stray.go) and says how many blocks and bytes it changed.
//
// Zeroed, not adopted by setting the bits: the bit is the sector's
// commit record. A flush writes it only after the data is synced, so
// data without it is a write no flush acknowledged, possibly torn (a
// multi-sector write of which only some pages reached the disk), and
// reads already treat it as absent. Setting the bits would publish it,
// changing what the disk reads (and, in a differencing image, hiding the
// parent's data); zeroing changes nothing any reader of the image sees.
//
// Order: none is needed. Every write lands only on sectors whose bits
// are clear, which reads do not show, so a crash after any subset of
// them leaves the disk reading exactly as before; running Repair again
// finishes the job. The caller syncs at the end.
func (s *sparse) zeroStray() (blocks, bytes int64, err error) {
	last := int64(-1)
	err = s.strayRuns(s.f, func(b, off, n int64) error {
		if b != last {
			blocks++
			last = b
		}
		bytes += n
		return writeZeros(s.f, off, n, &s.dataDirty)
	})
	return blocks, bytes, err
}

// listSome joins the first n of items into one line, and says how many
// more there are and where they are all listed.
func listSome(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, "; ")
	}
	return fmt.Sprintf("%s; and %d more it cannot fix ('vhd check' lists them all)", strings.Join(items[:n], "; "), len(items)-n)
}
