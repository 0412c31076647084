package vhdgen

import (
	"io"
	"os"
)

// pageSize is the unit File stores: a 256 MiB block of which a few
// sectors are written costs a few pages.
const pageSize = 64 << 10

// File is an image file held in memory, sparse: pages never written read
// as zeros and cost nothing.
type File struct {
	pages map[int64]*[pageSize]byte
	size  int64
}

// NewFile returns an empty file.
func NewFile() *File { return &File{pages: map[int64]*[pageSize]byte{}} }

// FileOf returns a file holding a copy of b; its pages of zeros are
// holes, so a sparse image read back costs what it holds.
func FileOf(b []byte) *File {
	f := NewFile()
	for off := 0; off < len(b); off += pageSize {
		page := b[off:min(off+pageSize, len(b))]
		if !allZero(page) {
			f.WriteAt(page, int64(off))
		}
	}
	f.size = int64(len(b))
	return f
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Size is the file's length.
func (f *File) Size() int64 { return f.size }

// ReadAt reads like a file: io.EOF at the end.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.size-off))
	for i := 0; i < n; {
		pg, in := (off+int64(i))/pageSize, (off+int64(i))%pageSize
		k := min(n-i, int(pageSize-in))
		if page := f.pages[pg]; page != nil {
			copy(p[i:i+k], page[in:])
		} else {
			clear(p[i : i+k])
		}
		i += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at off, growing the file.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	for i := 0; i < len(p); {
		pg, in := (off+int64(i))/pageSize, (off+int64(i))%pageSize
		k := min(len(p)-i, int(pageSize-in))
		page := f.pages[pg]
		if page == nil {
			page = new([pageSize]byte)
			f.pages[pg] = page
		}
		copy(page[in:], p[i:i+k])
		i += k
	}
	f.size = max(f.size, off+int64(len(p)))
	return len(p), nil
}

// Bytes reads n bytes at off (zeros past the end): what mutations edit.
func (f *File) Bytes(off, n int64) []byte {
	b := make([]byte, n)
	f.ReadAt(b, off)
	return b
}

// Truncate sets the file's length.
func (f *File) Truncate(n int64) {
	for pg := range f.pages {
		if pg*pageSize >= n {
			delete(f.pages, pg)
		}
	}
	if n < f.size && n%pageSize != 0 {
		if page := f.pages[n/pageSize]; page != nil {
			clear(page[n%pageSize:])
		}
	}
	f.size = n
}

// Clone returns a copy sharing nothing.
func (f *File) Clone() *File {
	c := &File{pages: make(map[int64]*[pageSize]byte, len(f.pages)), size: f.size}
	for pg, page := range f.pages {
		cp := *page
		c.pages[pg] = &cp
	}
	return c
}

// WriteFile writes the file to path with holes where no page is stored,
// so a 256 MiB block takes the disk space of what was written in it.
func (f *File) WriteFile(path string) error {
	out, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	for pg, page := range f.pages {
		n := min(pageSize, f.size-pg*pageSize)
		if _, err := out.WriteAt(page[:n], pg*pageSize); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Truncate(f.size); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ReadFile reads an image file into memory (for repro and the tests).
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return FileOf(b), nil
}
