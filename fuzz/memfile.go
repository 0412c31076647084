// Package fuzz holds vhdkit's fuzz targets (in the _test.go files: one
// per parser, one that opens whole images read-only and one that writes
// them) and the in-memory file they run the engine on.
//
// Run one target with
//
//	go test -run '^$' -fuzz '^FuzzOpen$' -fuzztime 3m ./fuzz/
//
// Crashers the fuzzer finds land in testdata/fuzz/<Target>/ and run as
// seeds in every `go test` from then on.
package fuzz

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"vhdkit/engine"
)

// pageSize is the unit MemFile stores. Pages never written, or written
// only with zeros, take no memory, so an image that grows its file by a
// 256 MiB block costs a footer's page, not 256 MiB.
const pageSize = 64 << 10

// ErrTooBig is returned by a MemFile write that would store more than its
// limit: the fuzz targets bound the memory an input can make them use.
var ErrTooBig = errors.New("memfile: write past the file's memory limit")

// MemFile is an engine.File held in memory, sparse: unwritten and zero
// pages read as zeros and cost nothing. Sync does nothing (everything
// written is "durable"). It is safe for concurrent use.
type MemFile struct {
	mu    sync.RWMutex
	pages map[int64]*[pageSize]byte // guarded by mu
	size  int64                     // guarded by mu
	limit int64                     // most bytes of pages stored
}

var _ engine.File = (*MemFile)(nil)

// NewMemFile returns a file holding a copy of b that refuses to store
// more than limit bytes of non-zero pages (0: no limit).
func NewMemFile(b []byte, limit int64) *MemFile {
	m := &MemFile{pages: make(map[int64]*[pageSize]byte)}
	m.writeLocked(b, 0) // cannot fail: no limit yet
	m.size = int64(len(b))
	m.limit = limit
	return m
}

// Clone returns a copy of the file, sharing nothing with it.
func (m *MemFile) Clone() *MemFile {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := &MemFile{pages: make(map[int64]*[pageSize]byte, len(m.pages)), size: m.size, limit: m.limit}
	for pg, page := range m.pages {
		cp := *page
		c.pages[pg] = &cp
	}
	return c
}

// Bytes returns a copy of the whole file.
func (m *MemFile) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	b := make([]byte, m.size)
	m.readLocked(b, 0)
	return b
}

func (m *MemFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("memfile: read at negative offset %d", off)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off >= m.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > m.size-off {
		n = int(m.size - off)
	}
	m.readLocked(p[:n], off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *MemFile) readLocked(p []byte, off int64) {
	for len(p) > 0 {
		pg, in := off/pageSize, off%pageSize
		c := copyLen(len(p), in)
		if page := m.pages[pg]; page != nil {
			copy(p[:c], page[in:])
		} else {
			clear(p[:c])
		}
		p, off = p[c:], off+int64(c)
	}
}

func copyLen(n int, in int64) int { return int(min(int64(n), pageSize-in)) }

func (m *MemFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > 1<<50 {
		return 0, fmt.Errorf("memfile: write at offset %d", off)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.writeLocked(p, off); err != nil {
		return 0, err
	}
	m.size = max(m.size, off+int64(len(p)))
	return len(p), nil
}

func (m *MemFile) writeLocked(p []byte, off int64) error {
	for len(p) > 0 {
		pg, in := off/pageSize, off%pageSize
		c := copyLen(len(p), in)
		page := m.pages[pg]
		if page == nil && !allZero(p[:c]) {
			if m.limit > 0 && int64(len(m.pages)+1)*pageSize > m.limit {
				return ErrTooBig
			}
			page = new([pageSize]byte)
			m.pages[pg] = page
		}
		if page != nil {
			copy(page[in:], p[:c])
		}
		p, off = p[c:], off+int64(c)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (m *MemFile) Sync() error  { return nil }
func (m *MemFile) Close() error { return nil }

func (m *MemFile) Size() (int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.size, nil
}

func (m *MemFile) Truncate(size int64) error {
	if size < 0 {
		return fmt.Errorf("memfile: truncate to %d", size)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if size < m.size {
		m.zeroLocked(size, m.size-size)
	}
	m.size = size
	return nil
}

// PunchHole zeros the range, keeping the size (FALLOC_FL_KEEP_SIZE).
func (m *MemFile) PunchHole(off, n int64) error {
	if off < 0 || n < 0 {
		return fmt.Errorf("memfile: punch hole at %d+%d", off, n)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.zeroLocked(off, n)
	return nil
}

// zeroLocked zeros [off, off+n), dropping the pages it covers whole.
func (m *MemFile) zeroLocked(off, n int64) {
	end := off + n
	for pg, page := range m.pages {
		ps, pe := pg*pageSize, (pg+1)*pageSize
		if pe <= off || ps >= end {
			continue
		}
		if off <= ps && pe <= end {
			delete(m.pages, pg)
			continue
		}
		clear(page[max(off, ps)-ps : min(end, pe)-ps])
	}
}

// NextData reports the first run of stored pages at or after off, as
// SEEK_DATA and SEEK_HOLE would (pages never written, or only with zeros,
// are holes), or io.EOF if there is none: so the engine's hole-skipping
// paths (the check's stray-data scan, the BAT read) run under the fuzzer
// too, and a check of an image with 256 MiB blocks reads what is stored,
// not every byte.
func (m *MemFile) NextData(off int64) (start, end int64, err error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	first := int64(-1)
	for pg := range m.pages {
		if pg*pageSize+pageSize > off && (first < 0 || pg < first) {
			first = pg
		}
	}
	if first < 0 || first*pageSize >= m.size {
		return 0, 0, io.EOF
	}
	last := first
	for m.pages[last+1] != nil {
		last++
	}
	return max(off, first*pageSize), min(m.size, (last+1)*pageSize), nil
}
