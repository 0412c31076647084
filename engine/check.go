package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Problem is one thing Check found wrong.
type Problem struct {
	// Code says what kind of problem it is (check_codes.go): stable, for
	// scripts and Repair to match, where Message may be reworded.
	Code string `json:"code"`
	// Fatal problems make the image unusable or unsafe to write; the
	// others are departures from the format that readers tolerate.
	Fatal bool `json:"fatal"`
	// Fixable is set when Repair can fix the problem safely.
	Fixable bool   `json:"fixable"`
	Offset  int64  `json:"offset"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	kind := "warning"
	if p.Fatal {
		kind = "error"
	}
	fix := ""
	if p.Fixable {
		fix = " (vhd repair fixes this)"
	}
	if p.Offset >= 0 {
		return fmt.Sprintf("%s %s at %#x: %s%s", kind, p.Code, p.Offset, p.Message, fix)
	}
	return fmt.Sprintf("%s %s: %s%s", kind, p.Code, p.Message, fix)
}

// Report is the result of Check.
type Report struct {
	Type     string    `json:"type"`
	Size     int64     `json:"virtual_size"`
	FileSize int64     `json:"file_size"`
	Blocks   int64     `json:"allocated_blocks"`
	Problems []Problem `json:"problems"`
}

// OK reports whether the check found nothing wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// CheckOptions select the slower checks.
type CheckOptions struct {
	// Bitmaps changes nothing any more: Check always looks for data
	// under clear bitmap bits, at a cost bounded by the data the file
	// holds there (stray.go). Kept so callers that set it still build.
	Bitmaps bool
}

// maxProblems bounds a report, so a wrecked BAT does not flood it.
const maxProblems = 100

// CheckPath checks the image at path without locking it for writing.
func CheckPath(path string, opts CheckOptions) (*Report, error) {
	f, err := OpenChecked(path, os.O_RDONLY, true)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return checkNamed(OSFile(f), path, opts)
}

// Check validates everything about an image file that vhd-util check
// does, and a little more. It returns an error only when the file cannot
// be read, or is not a VHD at all (a *FormatError: a qcow2 image, a
// compressed file, a raw disk with a partition table); damage goes in
// the report.
func Check(f File, opts CheckOptions) (*Report, error) { return checkNamed(f, "", opts) }

// checkNamed is Check with the file's name for a FormatError.
func checkNamed(f File, name string, opts CheckOptions) (*Report, error) {
	c := &checker{f: f, name: name, r: &Report{}}
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	c.r.FileSize = size
	if err := c.run(size, opts); err != nil {
		return nil, err
	}
	return c.r, nil
}

type checker struct {
	f    File
	name string
	r    *Report
}

// add reports damage found by a parser, under the code the error
// carries, or code if it carries none.
func (c *checker) add(code string, fatal, fixable bool, err error) {
	if len(c.r.Problems) >= maxProblems {
		return
	}
	p := Problem{Code: code, Fatal: fatal, Fixable: fixable, Offset: -1, Message: err.Error()}
	var ce *CorruptError
	if errors.As(err, &ce) {
		if ce.Code != "" {
			p.Code = ce.Code
		}
		p.Offset = ce.Offset
		p.Message = ce.Struct
		if ce.Field != "" {
			p.Message += " " + ce.Field
		}
		p.Message += ": " + ce.Msg
	}
	c.r.Problems = append(c.r.Problems, p)
}

func (c *checker) problem(code string, fatal, fixable bool, off int64, format string, args ...any) {
	if len(c.r.Problems) >= maxProblems {
		return
	}
	c.r.Problems = append(c.r.Problems, Problem{Code: code, Fatal: fatal, Fixable: fixable, Offset: off, Message: fmt.Sprintf(format, args...)})
}

// isIO tells an I/O failure from damage: damage goes in the report.
func isIO(err error) bool { return err != nil && !errors.Is(err, ErrCorrupt) }

func (c *checker) run(size int64, opts CheckOptions) error {
	img := &Image{f: c.f, readOnly: true, unlock: func() {}, log: slog.New(slog.DiscardHandler)}
	if err := img.readFooter(size); err != nil {
		if isIO(err) {
			return err
		}
		if ferr := otherFormat(c.f, c.name, err); ferr != nil {
			return ferr // not a VHD: nothing to report on, or to repair
		}
		if errors.Is(err, ErrNoFooter) && !c.vhdRemains(size) {
			return err // no VHD structure anywhere: a raw file, not damage
		}
		c.add(CodeFooterInvalid, true, false, err)
		return nil
	}
	if img.footerFromCopy {
		c.problem(CodeFooterDamaged, true, true, size-FooterSize, "footer at end of file is damaged; the copy at offset 0 is intact")
	}
	ft := img.footer
	c.r.Type = ft.DiskType.String()
	c.r.Size = ft.DiskSize()
	c.checkFooterFields(ft)
	if ft.DiskType == TypeFixed {
		return c.checkFixed(ft, size)
	}
	return c.checkSparse(img, size, opts)
}

// vhdRemains reports whether a file with no footer cookie still shows
// the remains of a VHD: a footer whose cookie alone was damaged (version
// 1.0 and a known disk type where a footer belongs: at the end, one byte
// before it, or at 0) or a dynamic header at 512. Such a file is a
// damaged VHD and check reports it; a file with none of them (a raw
// disk of zeros, a text file) is not a VHD at all, and check says so
// with exit status 1, as its help promises.
func (c *checker) vhdRemains(size int64) bool {
	var tail, head [FooterSize + 8]byte
	c.f.ReadAt(tail[:FooterSize], size-FooterSize)
	if n, _ := c.f.ReadAt(head[:], 0); n == len(head) && string(head[FooterSize:]) == headerCookie {
		return true
	}
	return footerShaped(tail[:FooterSize]) || footerShaped(tail[1:FooterSize]) || footerShaped(head[:FooterSize])
}

// footerShaped reports whether b carries a footer's version and disk
// type at their offsets, whatever its cookie and checksum say.
func footerShaped(b []byte) bool {
	if len(b) < offFooterDiskType+4 {
		return false
	}
	v := binary.BigEndian.Uint32(b[offFooterVersion:])
	t := DiskType(binary.BigEndian.Uint32(b[offFooterDiskType:]))
	return v>>16 == 1 && (t == TypeFixed || t == TypeDynamic || t == TypeDifferencing)
}

func (c *checker) checkFooterFields(ft Footer) {
	if ft.Features&featureReserved == 0 {
		c.problem(CodeFooterFeatures, false, false, offFooterFeatures, "footer features %#x lack the reserved bit 0x2", ft.Features)
	}
	if t := VHDTime(ft.Timestamp); t.After(time.Now().Add(24 * time.Hour)) {
		c.problem(CodeFooterTimestamp, false, false, offFooterTimestamp, "footer timestamp %s is in the future", t.Format(time.RFC3339))
	}
	// The CHS maximum, 65535/16/255, is exempt: QEMU writes it on every
	// image made with force_size=on as a marker meaning "go by current
	// size" (block/vpc.c), so it is a convention, not damage.
	if g := ft.Geometry; g.Bytes() > int64(ft.CurrentSize) && g.Bytes() != maxCHSSectors*SectorSize {
		c.problem(CodeFooterGeometry, false, false, offFooterGeometry, "geometry %s (%d bytes) is larger than the disk (%d bytes)", g, g.Bytes(), ft.CurrentSize)
	}
	if ft.SavedState != 0 {
		c.problem(CodeSavedState, false, false, offFooterSavedState, "saved-state flag is set: a virtual machine saved its state with this disk; compacting or resizing it would break that state")
	}
}

func (c *checker) checkFixed(ft Footer, size int64) error {
	want := int64(ft.CurrentSize) + FooterSize
	if ft.Short {
		want--
	}
	switch {
	case size < want:
		c.problem(CodeFixedTooShort, true, false, size, "file is %d bytes, too short for a fixed disk of %d bytes plus its footer", size, ft.CurrentSize)
	case size > want:
		c.problem(CodeFixedGap, false, true, int64(ft.CurrentSize), "%d bytes between the disk's data and the footer belong to nothing", size-want)
	}
	return nil
}

func (c *checker) checkSparse(img *Image, size int64, opts CheckOptions) error {
	if err := c.checkFooterCopy(img, size); err != nil {
		return err
	}
	s, err := parseSparse(img, size)
	if err != nil {
		if isIO(err) {
			return err
		}
		c.add(CodeHeaderInvalid, true, false, err)
		return nil
	}
	c.checkHeaderFields(s)
	for _, e := range batProblems(s.bat, s.tableOff, s.bitmapSize+s.blockSize, img.dataLimit(size), s.reserved, maxProblems) {
		c.add(CodeBATOverlap, true, false, e)
	}
	c.r.Blocks = s.allocatedBlocks()
	if tail := s.orphanTail(size - FooterSize); !img.footerFromCopy && tail > 0 {
		c.problem(CodeOrphanTail, false, true, size-FooterSize-tail, "%d bytes after the last allocated block belong to nothing (blocks allocated but never flushed)", tail)
	}
	if !c.usable() {
		return nil
	}
	s.bitmapHoles(c.f, img.footerFromCopy, func(b, off int64) bool {
		c.problem(CodeBitmapHole, false, false, off, "block %d's bitmap is a hole in the file: nothing was ever written there, so the block reads as never written; a download or copy that set the file's length first and did not finish leaves this, and then the block's data is lost (copy the image again)", b)
		return len(c.r.Problems) < maxProblems
	})
	if err := c.checkBatmap(s); err != nil {
		return err
	}
	return c.checkStray(s)
}

// usable reports whether the structures are sound enough to read blocks:
// no problem so far that Repair cannot fix.
func (c *checker) usable() bool {
	for _, p := range c.r.Problems {
		if p.Fatal && !p.Fixable {
			return false
		}
	}
	return true
}

func (c *checker) checkFooterCopy(img *Image, size int64) error {
	if img.footerFromCopy {
		return nil
	}
	var buf [FooterSize]byte
	if _, err := c.f.ReadAt(buf[:], 0); err != nil {
		return ioError("read footer copy", 0, err)
	}
	cp, err := ParseFooter(buf[:], 0)
	if err != nil {
		c.problem(CodeFooterCopyDamaged, false, true, 0, "footer copy at offset 0 is damaged: %v", err)
		return nil
	}
	ft := img.footer
	if cp.Marshal() != ft.Marshal() {
		c.problem(CodeFooterCopyDiffers, false, true, 0, "footer copy at offset 0 differs from the footer at the end")
	}
	return nil
}

func (c *checker) checkHeaderFields(s *sparse) {
	h := s.hdr
	if h.DataOffset != ^uint64(0) && h.DataOffset != 0xFFFFFFFF {
		c.problem(CodeHeaderDataOffset, false, false, s.hdrOff+offHdrDataOffset, "dynamic header data offset is %#x, want all ones", h.DataOffset)
	}
	if !s.differencing {
		if !h.ParentUUID.IsZero() || h.ParentName != "" {
			c.problem(CodeHeaderParentFields, false, false, s.hdrOff+offHdrParentUUID, "a dynamic disk has parent fields set (parent %q, %s)", h.ParentName, h.ParentUUID)
		}
		return
	}
	// blktap records a null UUID for a raw parent (rawparent.go).
	if ft := s.img.footer; h.ParentUUID.IsZero() && !isTapCreator(&ft) {
		c.problem(CodeParentUUIDMissing, true, false, s.hdrOff+offHdrParentUUID, "differencing disk has no parent UUID")
	}
	seen := map[string]bool{}
	n := 0
	for _, l := range h.Locators {
		if l.Empty() {
			continue
		}
		n++
		if seen[l.CodeString()] {
			c.problem(CodeLocatorDuplicate, false, false, l.at, "parent locator %q appears twice", l.CodeString())
		}
		seen[l.CodeString()] = true
	}
	if n == 0 && h.ParentName == "" {
		c.problem(CodeParentUnnamed, true, false, s.hdrOff+offHdrLocators, "differencing disk names no parent: no parent name and no locators")
	}
}

// checkStray reports blocks that hold data under clear bitmap bits, one
// problem per block, at the first such sector (see stray.go).
func (c *checker) checkStray(s *sparse) error {
	last := int64(-1)
	return s.strayRuns(c.f, func(b, off, _ int64) error {
		if b == last {
			return nil
		}
		last = b
		if len(c.r.Problems) >= maxProblems {
			return errStopScan
		}
		sec := (off - s.dataOff(s.entry(b))) / SectorSize
		c.problem(CodeDataUnderClearBit, false, true, off, "block %d sector %d holds data but its bitmap bit is clear: a write that never reached a flush, which reads do not show", b, sec)
		return nil
	})
}
