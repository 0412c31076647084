package engine

import (
	"io"
	"sync"
)

// memFile is an in-memory File for tests that need no crash simulation.
type memFile struct {
	mu   sync.Mutex
	data []byte
}

func newMemFile() *memFile { return &memFile{} }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(m.data)) {
		m.data = append(m.data, make([]byte, end-int64(len(m.data)))...)
	}
	return copy(m.data[off:], p), nil
}

func (m *memFile) Truncate(size int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if size <= int64(len(m.data)) {
		m.data = m.data[:size]
	} else {
		m.data = append(m.data, make([]byte, size-int64(len(m.data)))...)
	}
	return nil
}

func (m *memFile) PunchHole(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	end := min(off+n, int64(len(m.data)))
	if off < end {
		clear(m.data[off:end])
	}
	return nil
}

func (m *memFile) Size() (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.data)), nil
}

func (m *memFile) Sync() error  { return nil }
func (m *memFile) Close() error { return nil }
