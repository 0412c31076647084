package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"vhdkit/fuzz/vhdgen"
)

// Corrupt images, made in code from good ones (archive/zip's messWith):
// every footer, header, locator and BAT field damaged, files truncated
// at many lengths, lengths that lie. Each must either fail to open with
// an error that matches ErrCorrupt and names the field, or open and read
// right where the damage is harmless; never panic, hang or allocate
// without bound. Check must report the damage (not fail), and Repair
// must fix what it claims to.

// The good images every case starts from.
const (
	cbSize      = 3<<20 + 1536 // 7 blocks of 512 KiB, the last one short
	cbBlockSize = 512 << 10
	cbFixedSize = 1<<20 + 512
)

type goodImage struct {
	data  []byte // the image file
	model []byte // what the disk reads as
}

var (
	goodOnce                     sync.Once
	goodDyn, goodFixed, goodDiff goodImage
	goodParentPath               string // the differencing image's parent
	goodDir                      string
	goodErr                      error
)

// goodImages builds the three good images once: a dynamic image with
// blocks 0, 2 and 6 (the short last one) allocated, a fixed one with
// data, and a differencing child (three locators, blocks 1 and 3) of a
// dynamic parent that holds data too.
func goodImages(t *testing.T) {
	t.Helper()
	goodOnce.Do(func() {
		goodDir, goodErr = os.MkdirTemp("", "vhdkit-corrupt-")
		if goodErr != nil {
			return
		}
		rng := rand.New(rand.NewPCG(5, 6))
		build := func(name string, opts CreateOptions, writes [][2]int64) (goodImage, error) {
			path := filepath.Join(goodDir, name)
			img, err := Create(path, opts)
			if err != nil {
				return goodImage{}, err
			}
			model := make([]byte, opts.Size)
			for _, w := range writes {
				p := randomBytes(rng, w[1])
				if _, err := img.WriteAt(p, w[0]); err != nil {
					return goodImage{}, err
				}
				copy(model[w[0]:], p)
			}
			if err := img.Close(); err != nil {
				return goodImage{}, err
			}
			data, err := os.ReadFile(path)
			return goodImage{data, model}, err
		}
		goodDyn, goodErr = build("dyn.vhd", CreateOptions{Type: TypeDynamic, Size: cbSize, BlockSize: cbBlockSize},
			[][2]int64{{1000, 70000}, {2 * cbBlockSize, cbBlockSize}, {cbSize - 9000, 9000}})
		if goodErr != nil {
			return
		}
		goodFixed, goodErr = build("fixed.vhd", CreateOptions{Type: TypeFixed, Size: cbFixedSize},
			[][2]int64{{0, 4096}, {300000, 5000}, {cbFixedSize - 512, 512}})
		if goodErr != nil {
			return
		}
		var parent goodImage
		parent, goodErr = build("parent.vhd", CreateOptions{Type: TypeDynamic, Size: cbSize, BlockSize: cbBlockSize},
			[][2]int64{{0, cbSize}})
		if goodErr != nil {
			return
		}
		goodParentPath = filepath.Join(goodDir, "parent.vhd")
		pf, _ := ParseFooter(parent.data[len(parent.data)-FooterSize:], 0)
		goodDiff, goodErr = build("diff.vhd", CreateOptions{Type: TypeDifferencing, Size: cbSize, BlockSize: cbBlockSize,
			Parent: &ParentInfo{UUID: pf.UUID, Timestamp: pf.Timestamp, Name: "parent.vhd", Locators: []LocatorPath{
				{LocatorW2ku, `C:\vms\parent.vhd`}, {LocatorW2ru, `.\parent.vhd`}, {LocatorMacX, "/vms/parent.vhd"},
			}}},
			[][2]int64{{cbBlockSize + 4096, 8192}, {3 * cbBlockSize, cbBlockSize}})
		if goodErr != nil {
			return
		}
		// The child's model: the parent where the child holds nothing.
		m := bytes.Clone(parent.model)
		copy(m[cbBlockSize+4096:], goodDiff.model[cbBlockSize+4096:cbBlockSize+4096+8192])
		copy(m[3*cbBlockSize:], goodDiff.model[3*cbBlockSize:4*cbBlockSize])
		goodDiff.model = m
	})
	if goodErr != nil {
		t.Fatal(goodErr)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if goodDir != "" {
		os.RemoveAll(goodDir)
	}
	os.Exit(code)
}

// Edits of an image's bytes: vhdgen's (the generator of fuzz cases,
// which any parser's tests can use). Field edits recompute the
// structure's checksum, so the field itself is what gets judged; raw
// edits do not.
var (
	eofFooter   = vhdgen.EOFFooter
	footers     = vhdgen.Footers    // the footer at the end and, if copy0, the copy at 0
	rawFooters  = vhdgen.RawFooters // the footers, checksums left as they are
	header      = vhdgen.Header
	headerField = vhdgen.HeaderField
	put32       = vhdgen.Put32
	put64       = vhdgen.Put64
	locator     = vhdgen.LocatorEntry // parent locator i of the header
	tableOff    = vhdgen.TableOffset
	batEntryOf  = vhdgen.BATEntry
	batEntry    = vhdgen.SetBATEntry
	truncate    = vhdgen.Truncate
)

func fixSum(s []byte, at int) { vhdgen.SetChecksum(s, at) }

// corruptCase is one damaged image and what must come of it.
type corruptCase struct {
	name string
	base *goodImage
	mess func([]byte) []byte
	// want is a substring of Open's error, which must match ErrCorrupt;
	// "" means the image opens and reads exactly as the good one.
	want string
	// check is a substring of a problem Check must report; "" means the
	// report must be clean. Defaults to want.
	check string
	// code is that problem's code.
	code string
	// checkFatal is whether that problem is fatal (defaults to true when
	// Open fails).
	checkFatal *bool
	// fromCopy: the footer at the end is unusable; Open must say it used
	// the copy at offset 0.
	fromCopy bool
	// emptyDisk: the image opens as a disk of 0 bytes.
	emptyDisk bool
	// wrongData: the damage cannot be seen in the structures, so the
	// image opens and reads other data than the good one (Check's bitmap
	// pass is what notices).
	wrongData bool
}

func no() *bool  { f := false; return &f }
func yes() *bool { t := true; return &t }

// corruptCases lists every case. Messages are matched on the
// "structure field" pair that CorruptError and Check both print.
func corruptCases() []corruptCase {
	dyn, fixed, diff := &goodDyn, &goodFixed, &goodDiff
	var cs []corruptCase
	add := func(c corruptCase) { cs = append(cs, c) }

	// Footer fields, in both copies (a dynamic image with one good copy
	// opens: see below), and the fixed image's only footer.
	for _, base := range []struct {
		name string
		img  *goodImage
	}{{"dynamic", dyn}, {"fixed", fixed}} {
		both := base.img != fixed
		n := base.name + "/footer "
		add(corruptCase{code: CodeFooterInvalid, name: n + "cookie", base: base.img, mess: rawFooters(both, func(f []byte) { f[0] = 'C' }), want: "footer cookie"})
		add(corruptCase{code: CodeFooterInvalid, name: n + "checksum", base: base.img, mess: rawFooters(both, func(f []byte) { f[offFooterChecksum+3]++ }), want: "footer checksum"})
		add(corruptCase{code: CodeFooterInvalid, name: n + "checksum of a changed field", base: base.img, mess: rawFooters(both, func(f []byte) { f[offFooterCurSize+5]++ }), want: "footer checksum"})
		add(corruptCase{code: CodeFooterInvalid, name: n + "version 2.0", base: base.img, mess: footers(both, put32(offFooterVersion, 0x00020000)), want: "footer version"})
		add(corruptCase{code: CodeFooterInvalid, name: n + "version 0", base: base.img, mess: footers(both, put32(offFooterVersion, 0)), want: "footer version"})
		add(corruptCase{code: CodeFooterInvalid, name: n + "disk type 0", base: base.img, mess: footers(both, put32(offFooterDiskType, 0)), want: "footer disk type"})
		add(corruptCase{code: CodeFooterInvalid, name: n + "disk type 5", base: base.img, mess: footers(both, put32(offFooterDiskType, 5)), want: "footer disk type"})
		add(corruptCase{code: CodeFooterInvalid, name: n + "disk type 1<<31", base: base.img, mess: footers(both, put32(offFooterDiskType, 1<<31)), want: "footer disk type"})
		add(corruptCase{code: CodeFooterInvalid, name: n + "current size not a sector multiple", base: base.img, mess: footers(both, func(f []byte) { f[offFooterCurSize+7] += 7 }), want: "footer current size"})
		add(corruptCase{code: CodeFooterInvalid, name: n + "current size over 2040 GiB", base: base.img, mess: footers(both, put64(offFooterCurSize, MaxSize+512)), want: "footer current size"})
		add(corruptCase{code: CodeFooterInvalid, name: n + "current size 2^64-512", base: base.img, mess: footers(both, put64(offFooterCurSize, ^uint64(511))), want: "footer current size"})
	}
	// Data offset and size lies, by layout.
	add(corruptCase{code: CodeFooterInvalid, name: "fixed/footer data offset 512", base: fixed, mess: footers(false, put64(offFooterDataOffset, 512)), want: "footer data offset"})
	add(corruptCase{code: CodeFixedTooShort, name: "fixed/footer current size larger than the file", base: fixed, mess: footers(false, put64(offFooterCurSize, cbFixedSize+512)), want: "too short for a fixed disk"})
	add(corruptCase{code: CodeFixedTooShort, name: "fixed/footer current size 2040 GiB", base: fixed, mess: footers(false, put64(offFooterCurSize, MaxSize)), want: "too short for a fixed disk"})
	add(corruptCase{code: CodeFixedGap, name: "fixed/footer current size 0", base: fixed, mess: footers(false, put64(offFooterCurSize, 0)), emptyDisk: true,
		check: "bytes between the disk's data and the footer", checkFatal: no()})
	for _, v := range []struct {
		name string
		off  uint64
		want string
	}{
		{"all ones", ^uint64(0), "footer data offset"},
		{"unaligned", 513, "footer data offset"},
		{"0 (the footer copy)", 0, "dynamic header cookie"},
		{"past the end", 1 << 40, "footer data offset"},
		{"2^64-512", ^uint64(511), "footer data offset"},
		{"2^63", 1 << 63, "footer data offset"},
		{"inside the BAT", 1536, "dynamic header cookie"},
	} {
		code := CodeFooterInvalid
		if strings.HasPrefix(v.want, "dynamic header") {
			code = CodeHeaderInvalid
		}
		add(corruptCase{code: code, name: "dynamic/footer data offset " + v.name, base: dyn, mess: footers(true, put64(offFooterDataOffset, v.off)), want: v.want})
	}
	add(corruptCase{code: CodeHeaderInvalid, name: "dynamic/footer current size beyond the BAT", base: dyn, mess: footers(true, put64(offFooterCurSize, cbSize+cbBlockSize)), want: "dynamic header max table entries"})
	add(corruptCase{code: CodeHeaderInvalid, name: "dynamic/footer current size 2040 GiB", base: dyn, mess: footers(true, put64(offFooterCurSize, MaxSize)), want: "dynamic header max table entries"})
	add(corruptCase{code: CodeFixedTooShort, name: "dynamic/footer says fixed", base: dyn, mess: footers(true, func(f []byte) {
		put32(offFooterDiskType, uint32(TypeFixed))(f)
		put64(offFooterDataOffset, noDataOffset)(f)
	}), want: "footer"})

	// One footer damaged: the other stands in.
	add(corruptCase{code: CodeFooterDamaged, name: "dynamic/footer at the end torn", base: dyn, mess: rawFooters(false, func(f []byte) { clear(f[40:]) }), fromCopy: true,
		check: "footer at end of file is damaged"})
	add(corruptCase{code: CodeFooterDamaged, name: "dynamic/footer at the end zeroed", base: dyn, mess: rawFooters(false, func(f []byte) { clear(f) }), fromCopy: true,
		check: "footer at end of file is damaged"})
	add(corruptCase{code: CodeFooterDamaged, name: "differencing/footer at the end bad cookie", base: diff, mess: rawFooters(false, func(f []byte) { f[1] = 'X' }), fromCopy: true,
		check: "footer at end of file is damaged"})
	add(corruptCase{code: CodeFooterCopyDamaged, name: "dynamic/footer copy at 0 damaged", base: dyn, mess: func(b []byte) []byte { b[offFooterChecksum]++; return b },
		check: "footer copy at offset 0 is damaged", checkFatal: no()})
	add(corruptCase{code: CodeFooterCopyDiffers, name: "dynamic/footer copy at 0 differs", base: dyn, mess: func(b []byte) []byte {
		put32(offFooterTimestamp, 12345)(b)
		fixSum(b[:FooterSize], offFooterChecksum)
		return b
	}, check: "footer copy at offset 0 differs", checkFatal: no()})

	// Dynamic header fields.
	h := "dynamic/header "
	add(corruptCase{code: CodeHeaderInvalid, name: h + "cookie", base: dyn, mess: func(b []byte) []byte { header(b)[3] = 'X'; return b }, want: "dynamic header cookie"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "checksum", base: dyn, mess: func(b []byte) []byte { header(b)[offHdrChecksum]++; return b }, want: "dynamic header checksum"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "checksum of a changed field", base: dyn, mess: func(b []byte) []byte { header(b)[offHdrBlockSize+1]++; return b }, want: "dynamic header checksum"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "version 2.0", base: dyn, mess: headerField(put32(offHdrVersion, 0x00020000)), want: "dynamic header version"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "table offset past the end", base: dyn, mess: headerField(put64(offHdrTableOffset, 1<<30)), want: "dynamic header table offset"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "table offset 2^64-512", base: dyn, mess: headerField(put64(offHdrTableOffset, ^uint64(511))), want: "dynamic header table offset"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "table offset in the last sector", base: dyn, mess: func(b []byte) []byte {
		return headerField(put64(offHdrTableOffset, uint64(len(b)-FooterSize)))(b)
	}, want: "dynamic header table offset"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "table offset unaligned", base: dyn, mess: headerField(put64(offHdrTableOffset, 1536+4)), want: "dynamic header table offset"})
	add(corruptCase{code: CodeBATOverlap, name: h + "table offset 0 (the footer copy)", base: dyn, mess: headerField(put64(offHdrTableOffset, 0)), want: "BAT entry"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "max table entries too small", base: dyn, mess: headerField(put32(offHdrMaxEntries, 6)), want: "dynamic header max table entries"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "max table entries 0", base: dyn, mess: headerField(put32(offHdrMaxEntries, 0)), want: "dynamic header max table entries"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "max table entries huge", base: dyn, mess: headerField(put32(offHdrMaxEntries, 0xFFFFFFFF)), want: "dynamic header max table entries"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "block size not a power of two", base: dyn, mess: headerField(put32(offHdrBlockSize, 3*512)), want: "dynamic header block size"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "block size 0", base: dyn, mess: headerField(put32(offHdrBlockSize, 0)), want: "dynamic header block size"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "block size 256", base: dyn, mess: headerField(put32(offHdrBlockSize, 256)), want: "dynamic header block size"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "block size 1 GiB", base: dyn, mess: headerField(put32(offHdrBlockSize, 1<<30)), want: "dynamic header block size"})
	add(corruptCase{code: CodeHeaderInvalid, name: h + "block size 2^31", base: dyn, mess: headerField(put32(offHdrBlockSize, 1<<31)), want: "dynamic header block size"})
	// A power of two the BAT does not match: blocks now overlap...
	add(corruptCase{code: CodeBATOverlap, name: h + "block size 1 MiB", base: dyn, mess: headerField(put32(offHdrBlockSize, 1<<20)), want: "BAT entry"})
	// ...or, at 2 MiB, they do not (only block 0 is still in the table):
	// the structures are consistent, the data is not. Check's bitmap
	// pass sees sectors with data their bit disowns.
	add(corruptCase{code: CodeDataUnderClearBit, name: h + "block size 2 MiB", base: dyn, mess: headerField(put32(offHdrBlockSize, 2<<20)), wrongData: true,
		check: "holds data but its bitmap bit is clear", checkFatal: no()})
	add(corruptCase{code: CodeHeaderDataOffset, name: h + "data offset 0", base: dyn, mess: headerField(put64(offHdrDataOffset, 0)), check: "dynamic header data offset", checkFatal: no()})
	add(corruptCase{code: CodeHeaderParentFields, name: h + "parent fields on a dynamic disk", base: dyn, mess: headerField(func(h []byte) { h[offHdrParentUUID] = 1 }), check: "parent fields set", checkFatal: no()})

	// Parent locators of the differencing image (0 W2ku, 1 W2ru, 2 MacX).
	l := "differencing/locator "
	add(corruptCase{code: CodeLocatorInvalid, name: l + "unknown code", base: diff, mess: locator(1, func(l []byte) { copy(l, "XYZ!") }), want: "parent locator code"})
	add(corruptCase{code: CodeLocatorInvalid, name: l + "data offset past the end", base: diff, mess: locator(0, put64(16, 1<<40)), want: "parent locator data offset"})
	add(corruptCase{code: CodeLocatorInvalid, name: l + "data offset 2^64-512", base: diff, mess: locator(0, put64(16, ^uint64(511))), want: "parent locator data offset"})
	add(corruptCase{code: CodeLocatorInvalid, name: l + "data length past the end", base: diff, mess: func(b []byte) []byte {
		return locator(2, func(l []byte) {
			put64(16, uint64(len(b)-600))(l)
			put32(8, 1000)(l)
		})(b)
	}, want: "parent locator data offset"})
	add(corruptCase{code: CodeLocatorInvalid, name: l + "data length huge", base: diff, mess: locator(0, put32(8, 0x7FFFFFFF)), want: "parent locator data length"})
	add(corruptCase{code: CodeLocatorInvalid, name: l + "data length 2^32-1", base: diff, mess: locator(0, put32(8, 0xFFFFFFFF)), want: "parent locator data length"})
	add(corruptCase{code: CodeLocatorInvalid, name: l + "data offset 0 (the footer copy)", base: diff, mess: locator(0, put64(16, 0)), want: "parent locator data offset"})
	add(corruptCase{name: l + "data over the BAT", base: diff, mess: func(b []byte) []byte {
		return locator(0, put64(16, uint64(tableOff(b))))(b)
	}, check: "", want: ""})
	add(corruptCase{code: CodeLocatorInvalid, name: l + "data space past the end", base: diff, mess: locator(0, put32(4, 0xFFFFFFFF)), want: "parent locator data space"})
	add(corruptCase{code: CodeLocatorDuplicate, name: l + "duplicate code", base: diff, mess: locator(1, func(l []byte) { copy(l, LocatorW2ku) }), check: "appears twice", checkFatal: no()})
	add(corruptCase{code: CodeParentUnnamed, name: l + "all gone, no name", base: diff, mess: headerField(func(h []byte) {
		clear(h[offHdrParentName : offHdrParentName+parentNameSize])
		clear(h[offHdrLocators : offHdrLocators+locatorCount*locatorSize])
	}), check: "names no parent", checkFatal: yes()})
	add(corruptCase{code: CodeParentUUIDMissing, name: "differencing/header parent UUID zero", base: diff, mess: headerField(func(h []byte) { clear(h[offHdrParentUUID : offHdrParentUUID+16]) }), check: "no parent UUID", checkFatal: yes()})

	// BAT entries. Block 0 (entry 0), 2 and 6 are allocated.
	b := "dynamic/BAT "
	add(corruptCase{code: CodeBATOutOfRange, name: b + "entry past the end", base: dyn, mess: batEntry(1, func(b []byte) uint32 { return uint32(len(b) / 512) }), want: "BAT entry"})
	add(corruptCase{code: CodeBATOutOfRange, name: b + "entry 0xFFFFFFFE", base: dyn, mess: batEntry(3, func([]byte) uint32 { return 0xFFFFFFFE }), want: "BAT entry"})
	add(corruptCase{code: CodeBATOutOfRange, name: b + "entry over the footer at the end", base: dyn, mess: batEntry(6, func(b []byte) uint32 { return batEntryOf(b, 6) + 1 }), want: "BAT entry"})
	add(corruptCase{code: CodeBATOverlap, name: b + "entry 0 (footer copy)", base: dyn, mess: batEntry(0, func([]byte) uint32 { return 0 }), want: "BAT entry"})
	add(corruptCase{code: CodeBATOverlap, name: b + "entry in the header", base: dyn, mess: batEntry(0, func([]byte) uint32 { return 2 }), want: "BAT entry"})
	add(corruptCase{code: CodeBATOverlap, name: b + "entry on the BAT", base: dyn, mess: batEntry(0, func(b []byte) uint32 { return uint32(tableOff(b) / 512) }), want: "BAT entry"})
	add(corruptCase{code: CodeBATOverlap, name: b + "entries overlapping", base: dyn, mess: batEntry(2, func(b []byte) uint32 { return batEntryOf(b, 0) + 8 }), want: "BAT entry"})
	add(corruptCase{code: CodeBATOverlap, name: b + "entries equal", base: dyn, mess: batEntry(5, func(b []byte) uint32 { return batEntryOf(b, 2) }), want: "BAT entry"})
	add(corruptCase{code: CodeBATOverlap, name: "differencing/BAT entry on a locator", base: diff, mess: func(b []byte) []byte {
		lo := binary.BigEndian.Uint64(header(b)[offHdrLocators+16:])
		return batEntry(0, func([]byte) uint32 { return uint32(lo / 512) })(b)
	}, want: "BAT entry"})
	// Entries past the disk's blocks (the table is padded to a sector)
	// are never used.
	add(corruptCase{name: b + "padding entry", base: dyn, mess: batEntry(100, func([]byte) uint32 { return 0x12345678 })})

	// Truncations: every 512 bytes over the last 8 KiB, odd lengths, the
	// middle, inside each structure.
	for _, base := range []struct {
		name string
		img  *goodImage
	}{{"dynamic", dyn}, {"fixed", fixed}, {"differencing", diff}} {
		size := len(base.img.data)
		lengths := []int{0, 1, 100, 511, 512, 513, 1024, 1536, 1600, 2048, 4096, size / 2, size / 3, size - 1, size - 100, size - 511}
		for k := 1; k <= 16; k++ {
			lengths = append(lengths, size-512*k)
		}
		for _, n := range lengths {
			c := corruptCase{name: fmt.Sprintf("%s/truncated to %d of %d", base.name, n, size), base: base.img, mess: truncate(func([]byte) int { return n })}
			c.want, c.code, c.fromCopy = truncationOutcome(base.img, n)
			if c.fromCopy {
				c.check, c.code = "footer at end of file is damaged", CodeFooterDamaged
			}
			add(c)
		}
	}
	// A file that grew: bytes after the footer. The footer at the end is
	// then garbage and the copy stands in; for a fixed image, nothing
	// does.
	add(corruptCase{code: CodeFooterDamaged, name: "dynamic/grown by 1 MiB of zeros", base: dyn, mess: func(b []byte) []byte { return append(b, make([]byte, mib)...) },
		fromCopy: true, check: "footer at end of file is damaged"})
	add(corruptCase{code: CodeFooterInvalid, name: "fixed/grown by 512 bytes", base: fixed, mess: func(b []byte) []byte { return append(b, make([]byte, 512)...) }, want: "footer cookie"})
	return cs
}

// truncationOutcome says what a truncation of img to n bytes must give:
// the error substring and Check's problem code, or "" and fromCopy when
// every structure and block survives and only (part of) the footer at the
// end is lost. It follows the order in which Open validates a dynamic or
// differencing image.
func truncationOutcome(img *goodImage, n int) (want, code string, fromCopy bool) {
	b := img.data
	ft, _ := ParseFooter(eofFooter(b), 0)
	switch {
	case n < FooterSize:
		return "too short", CodeFooterInvalid, false
	case ft.DiskType == TypeFixed && n == len(b)-1:
		// The footer lost its last byte, which is reserved and zero:
		// what is left is a valid 511-byte footer of a pre-2004 Virtual
		// PC image, and all the data is there.
		return "", "", false
	case ft.DiskType == TypeFixed:
		return "footer", CodeFooterInvalid, false
	case n < FooterSize+HeaderSize:
		return "footer data offset", CodeFooterInvalid, false
	}
	// The footer at the end is gone: the copy at 0 stands in and the
	// data area runs to the end of the file.
	to := int(tableOff(b))
	entries := int(binary.BigEndian.Uint32(header(b)[offHdrMaxEntries:]))
	switch {
	case n < to+4*entries:
		return "dynamic header table offset", CodeHeaderInvalid, false
	case n < to+int(batBytes(uint32(entries))):
		return "dynamic header max table entries", CodeHeaderInvalid, false
	}
	for i := 0; i < locatorCount; i++ {
		l := decodeLocator(header(b)[offHdrLocators+i*locatorSize:], 0)
		if !l.Empty() && n < int(l.DataOffset)+int(l.spaceBytes()) {
			return "parent locator data", CodeLocatorInvalid, false
		}
	}
	for i := 0; i < entries; i++ {
		if e := batEntryOf(b, i); e != batUnused && n < int(e)*512+512+cbBlockSize {
			return "BAT entry", CodeBATOutOfRange, false
		}
	}
	return "", "", true
}

// withDeadline runs fn in a goroutine and fails the test if it panics or
// takes longer than d.
func withDeadline(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		fn()
	}()
	select {
	case p := <-done:
		if p != nil {
			t.Fatalf("panic: %v", p)
		}
	case <-time.After(d):
		t.Fatalf("still running after %s", d)
	}
}

// logCapture is a slog handler that keeps the messages it is given.
type logCapture struct {
	mu   sync.Mutex
	msgs []string
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCapture) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.msgs = append(h.msgs, r.Message)
	h.mu.Unlock()
	return nil
}
func (h *logCapture) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCapture) WithGroup(string) slog.Handler      { return h }

// maxCorruptAlloc bounds what Open and a full read of any corrupt image
// may allocate (the good images need well under 1 MiB).
const maxCorruptAlloc = 4 << 20

func TestCorruptImages(t *testing.T) {
	goodImages(t)
	dir := t.TempDir()
	parent, err := Open(goodParentPath, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	for i, c := range corruptCases() {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("case%d.vhd", i))
			data := c.mess(bytes.Clone(c.base.data))
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			withDeadline(t, 10*time.Second, func() { openCorrupt(t, path, c, parent) })
			withDeadline(t, 10*time.Second, func() { checkCorrupt(t, path, c) })
		})
	}
}

// openCorrupt opens the damaged image read-only and reads all of it,
// measuring what that allocates.
func openCorrupt(t *testing.T, path string, c corruptCase, parent Disk) {
	logs := &logCapture{}
	buf := make([]byte, 64<<10)
	got := make([]byte, 0, len(c.base.model))
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	img, err := Open(path, Options{ReadOnly: true, Logger: slog.New(logs)})
	var readErr error
	if err == nil {
		if img.Type() == TypeDifferencing {
			img.SetParent(parent)
		}
		for off := int64(0); off < img.Size() && readErr == nil; off += int64(len(buf)) {
			n := min(int64(len(buf)), img.Size()-off)
			_, readErr = img.ReadAt(buf[:n], off)
			if int64(len(got))+n <= int64(cap(got)) {
				got = append(got, buf[:n]...)
			}
		}
	}
	runtime.ReadMemStats(&ms)
	if alloc := ms.TotalAlloc - before; alloc > maxCorruptAlloc {
		t.Errorf("open and read allocated %d bytes", alloc)
	}
	if c.want != "" {
		if err == nil {
			img.Close()
			t.Fatalf("opened; want an error about %q", c.want)
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("error does not match ErrCorrupt: %v", err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %q does not name %q", err, c.want)
		}
		return
	}
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer img.Close()
	if readErr != nil {
		t.Fatalf("read: %v", readErr)
	}
	switch {
	case c.emptyDisk:
		if img.Size() != 0 {
			t.Errorf("size %d, want 0", img.Size())
		}
	case c.wrongData:
		if bytes.Equal(got, c.base.model) {
			t.Errorf("reads as the good image")
		}
	case !bytes.Equal(got, c.base.model):
		t.Errorf("reads differently from the good image at byte %d", firstDiff(got, c.base.model))
	}
	if img.FooterFromCopy() != c.fromCopy {
		t.Errorf("FooterFromCopy %v, want %v", img.FooterFromCopy(), c.fromCopy)
	}
	if c.fromCopy {
		said := false
		for _, m := range logs.msgs {
			said = said || strings.Contains(m, "using the copy at offset 0")
		}
		if !said {
			t.Errorf("read-only open used the footer copy without saying so (logged %q)", logs.msgs)
		}
	}
}

// checkCorrupt runs Check: it must report the damage, not fail.
func checkCorrupt(t *testing.T, path string, c corruptCase) {
	rep, err := CheckPath(path, CheckOptions{Bitmaps: true})
	if errors.Is(err, ErrNoFooter) && c.code == CodeFooterInvalid {
		return // nothing of a VHD is left (a fixed disk cut before its footer): "not a VHD"
	}
	if err != nil {
		t.Fatalf("check returned an error instead of a report: %v", err)
	}
	for _, p := range rep.Problems {
		if !slices.Contains(problemCodes, p.Code) {
			t.Errorf("check reports %q under code %q, which is not a problem code", p.Message, p.Code)
		}
	}
	want := c.check
	if want == "" && c.want != "" {
		want = c.want
	}
	fatal := c.want != ""
	if c.checkFatal != nil {
		fatal = *c.checkFatal
	}
	if c.fromCopy {
		fatal = true // reported as fatal and fixable: see TestCorruptRepair
	}
	if want == "" {
		for _, p := range rep.Problems {
			t.Errorf("check: %s", p)
		}
		return
	}
	// Check prints "structure field: message"; Open's errors say "vhd:
	// structure field at offset ...".
	for _, p := range rep.Problems {
		if p.Code == c.code && p.Fatal == fatal {
			if !strings.Contains(p.Message, want) {
				t.Errorf("check reports %s as %q, which does not say %q", p.Code, p.Message, want)
			}
			return
		}
	}
	t.Errorf("check does not report %s (%q, fatal %v); it says:\n%s", c.code, want, fatal, problemList(rep))
}

func problemList(r *Report) string {
	var sb strings.Builder
	for _, p := range r.Problems {
		fmt.Fprintf(&sb, "  %s\n", p)
	}
	return sb.String()
}

// TestCorruptRepair: Repair fixes what it can fix (a torn or missing
// footer at the end, a damaged or stale copy at offset 0, an orphan tail
// of unflushed blocks), after which Check is clean, the file is the good
// one byte for byte and qemu-img reads the right data; it refuses, and
// changes nothing, on damage it cannot fix. A writable Open repairs a
// torn footer by itself.
func TestCorruptRepair(t *testing.T) {
	goodImages(t)
	dir := t.TempDir()
	dyn, diff := &goodDyn, &goodDiff
	orphan := func(b []byte) []byte {
		// A block allocated but never flushed: the space and a footer
		// after it, the BAT unchanged.
		ft := bytes.Clone(eofFooter(b))
		b = append(b[:len(b)-FooterSize], make([]byte, 4096+512+cbBlockSize)...)
		return append(b, ft...)
	}
	for _, c := range []struct {
		name string
		base *goodImage
		mess func([]byte) []byte
		did  int // lines Repair reports
	}{
		{"footer at the end torn", dyn, rawFooters(false, func(f []byte) { clear(f[40:]) }), 1},
		{"differencing footer at the end torn", diff, rawFooters(false, func(f []byte) { f[offFooterChecksum]++ }), 1},
		{"footer at the end zeroed", dyn, rawFooters(false, func(f []byte) { clear(f) }), 1},
		{"footer at the end lost", dyn, truncate(func(b []byte) int { return len(b) - FooterSize }), 1},
		{"footer at the end half lost", dyn, truncate(func(b []byte) int { return len(b) - 200 }), 1},
		{"footer copy damaged", dyn, func(b []byte) []byte { b[5] = 0; return b }, 1},
		{"footer copy stale", diff, func(b []byte) []byte {
			put32(offFooterTimestamp, 1)(b)
			fixSum(b[:FooterSize], offFooterChecksum)
			return b
		}, 1},
		{"orphan tail", dyn, orphan, 1},
		{"orphan tail and torn footer copy", dyn, func(b []byte) []byte { b = orphan(b); b[0] = 'x'; return b }, 2},
		{"grown by 1 MiB of zeros", dyn, func(b []byte) []byte { return append(b, make([]byte, mib)...) }, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".vhd")
			if err := os.WriteFile(path, c.mess(bytes.Clone(c.base.data)), 0o644); err != nil {
				t.Fatal(err)
			}
			rep, err := CheckPath(path, CheckOptions{Bitmaps: true})
			if err != nil || rep.OK() {
				t.Fatalf("check before repair: %v, %v; want a problem", rep, err)
			}
			var did []string
			withDeadline(t, 10*time.Second, func() { did, err = Repair(path, RepairOptions{Bitmaps: true}) })
			if err != nil || len(did) != c.did {
				t.Fatalf("repair: %q, %v; want %d things done", did, err, c.did)
			}
			checkClean(t, path)
			if got, _ := os.ReadFile(path); !bytes.Equal(got, c.base.data) {
				t.Errorf("repaired file differs from the good one at %d (%d vs %d bytes)", firstDiff(got, c.base.data), len(got), len(c.base.data))
			}
			if c.base == dyn {
				m := newModel(t, filepath.Join(dir, "model.raw"), cbSize)
				m.write(t, dyn.model, 0)
				qemuMustRead(t, path, m.path, dir)
			}
		})
	}

	t.Run("writable open", func(t *testing.T) {
		for _, mess := range []func([]byte) []byte{
			rawFooters(false, func(f []byte) { clear(f[40:]) }),
			truncate(func(b []byte) int { return len(b) - 300 }),
		} {
			path := filepath.Join(dir, "open.vhd")
			os.Remove(path)
			if err := os.WriteFile(path, mess(bytes.Clone(dyn.data)), 0o644); err != nil {
				t.Fatal(err)
			}
			img, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !img.FooterFromCopy() {
				t.Errorf("FooterFromCopy is false")
			}
			if got := readDisk(t, img); !bytes.Equal(got, dyn.model) {
				t.Errorf("reads differently at %d", firstDiff(got, dyn.model))
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			checkClean(t, path)
			if got, _ := os.ReadFile(path); !bytes.Equal(got, dyn.data) {
				t.Errorf("file differs from the good one at %d after a writable open", firstDiff(got, dyn.data))
			}
		}
	})

	t.Run("unfixable", func(t *testing.T) {
		for _, c := range corruptCases() {
			if c.want == "" || c.fromCopy {
				continue
			}
			path := filepath.Join(dir, "unfixable.vhd")
			data := c.mess(bytes.Clone(c.base.data))
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			var err error
			withDeadline(t, 10*time.Second, func() { _, err = Repair(path, RepairOptions{Bitmaps: true}) })
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: repair: %v; want a refusal matching ErrCorrupt", c.name, err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
				t.Errorf("%s: repair changed a file it refused to repair", c.name)
			}
		}
	})
}
