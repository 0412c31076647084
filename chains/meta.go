package chains

import (
	"fmt"
	"io"

	"vhdkit/engine"
)

// metadata is what following a parent link reads of an image: its footer,
// its dynamic header (nil for a fixed image) and its parent locators. An
// open *engine.Image has them; imageMeta reads them alone.
type metadata interface {
	Footer() engine.Footer
	Header() *engine.DynamicHeader
	ParentLocators() ([]engine.ParentLocator, error)
}

var (
	_ metadata = (*engine.Image)(nil)
	_ metadata = (*imageMeta)(nil)
)

// imageMeta is an image's metadata read without opening the image: the
// footer, the dynamic header and the parent locators' paths, a few KiB
// whatever the image claims, never its BAT. The folder scans (Scan,
// Dependents) read every image in a folder this way, so a hostile file
// claiming a table of millions of entries costs them two small reads.
type imageMeta struct {
	footer engine.Footer
	header *engine.DynamicHeader
	locs   []engine.ParentLocator
}

func (m *imageMeta) Footer() engine.Footer                           { return m.footer }
func (m *imageMeta) Header() *engine.DynamicHeader                   { return m.header }
func (m *imageMeta) ParentLocators() ([]engine.ParentLocator, error) { return m.locs, nil }

// Size is the virtual disk size.
func (m *imageMeta) Size() int64 { return m.footer.DiskSize() }

// maxLocatorBytes bounds the locator data a scan reads: a path is at
// most 32767 UTF-16 units (the engine refuses longer ones too).
const maxLocatorBytes = 64 << 10

// readMeta reads path's footer, dynamic header and parent locators. The
// file must be a regular file (opened as parents are: no FIFO blocks it).
func readMeta(path string) (*imageMeta, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	m, err := readMetaFrom(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// readMetaFrom reads the metadata of the image in r, a file of size
// bytes: at most two footers, a header and the locators' data.
func readMetaFrom(r io.ReaderAt, size int64) (*imageMeta, error) {
	var end, first [engine.FooterSize]byte
	if size >= engine.FooterSize {
		if _, err := r.ReadAt(end[:], size-engine.FooterSize); err != nil {
			return nil, fmt.Errorf("read footer: %w", err)
		}
		if _, err := r.ReadAt(first[:], 0); err != nil {
			return nil, fmt.Errorf("read footer copy: %w", err)
		}
	}
	ft, limit, err := pickFooter(end[:], first[:], size)
	if err != nil {
		return nil, err
	}
	m := &imageMeta{footer: ft}
	if ft.DiskType == engine.TypeFixed {
		return m, nil
	}
	if m.header, err = readHeader(r, ft, limit); err != nil {
		return nil, err
	}
	if ft.DiskType == engine.TypeDifferencing {
		if m.locs, err = readLocators(r, m.header, size); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// pickFooter chooses the footer as the engine does (engine.Image's
// readFooter): the last 512 bytes, unless they describe another disk than
// the copy at offset 0 of a dynamic or differencing image (disk data a
// crash left at the end); else the last 511 bytes of an old fixed image;
// else that copy. limit is where the data area ends (the header must lie
// before it).
func pickFooter(end, first []byte, size int64) (ft engine.Footer, limit int64, err error) {
	if size < engine.FooterSize {
		return ft, 0, fmt.Errorf("%w: %d bytes is too short to hold a VHD footer", engine.ErrCorrupt, size)
	}
	c, errCopy := engine.ParseFooter(first, 0)
	copyOK := errCopy == nil && c.DiskType != engine.TypeFixed
	ft, errEnd := engine.ParseFooter(end, size-engine.FooterSize)
	if errEnd == nil && (!copyOK || sameDisk(ft, c) || ft.DiskType == engine.TypeFixed && int64(ft.CurrentSize)+engine.FooterSize == size) {
		return ft, size - engine.FooterSize, nil
	}
	if errEnd == nil {
		errEnd = fmt.Errorf("%w: the footer at the end describes another disk than its copy at offset 0", engine.ErrCorrupt)
	}
	if f511, err := engine.ParseFooter(end[1:], size-engine.FooterSize+1); err == nil && f511.DiskType == engine.TypeFixed {
		return f511, size, nil
	}
	if copyOK {
		return c, size, nil
	}
	return ft, 0, errEnd
}

func sameDisk(a, b engine.Footer) bool {
	return a.DiskType == b.DiskType && a.CurrentSize == b.CurrentSize && a.UUID == b.UUID
}

// readHeader reads and checks the dynamic header the footer points at.
func readHeader(f io.ReaderAt, ft engine.Footer, limit int64) (*engine.DynamicHeader, error) {
	if ft.DataOffset > uint64(limit) || limit-int64(ft.DataOffset) < engine.HeaderSize {
		return nil, fmt.Errorf("%w: dynamic header at %#x does not fit in the file", engine.ErrCorrupt, ft.DataOffset)
	}
	var raw [engine.HeaderSize]byte
	if _, err := f.ReadAt(raw[:], int64(ft.DataOffset)); err != nil {
		return nil, fmt.Errorf("read dynamic header: %w", err)
	}
	h, err := engine.ParseDynamicHeader(raw[:], int64(ft.DataOffset))
	if err != nil {
		return nil, err
	}
	return &h, nil
}

// readLocators reads the non-empty parent locators, each checked against
// the file size and maxLocatorBytes before anything is allocated.
func readLocators(f io.ReaderAt, h *engine.DynamicHeader, size int64) ([]engine.ParentLocator, error) {
	var list []engine.ParentLocator
	for _, l := range h.Locators {
		if l.Empty() {
			continue
		}
		if l.DataLength > maxLocatorBytes || l.DataOffset > uint64(size) || uint64(l.DataLength) > uint64(size)-l.DataOffset {
			return nil, fmt.Errorf("%w: parent locator %q: %d bytes at %#x do not fit in the file", engine.ErrCorrupt, l.CodeString(), l.DataLength, l.DataOffset)
		}
		data := make([]byte, l.DataLength)
		if _, err := f.ReadAt(data, int64(l.DataOffset)); err != nil {
			return nil, fmt.Errorf("read parent locator: %w", err)
		}
		pl := engine.ParentLocator{Code: l.CodeString()}
		pl.Path, pl.Err = engine.DecodeLocatorPath(pl.Code, data)
		list = append(list, pl)
	}
	return list, nil
}
