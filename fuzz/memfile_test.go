package fuzz

import (
	"errors"
	"io"
	"testing"
)

// TestMemFileNextData: NextData reports runs of stored pages, clipped to
// the file's size, as SEEK_DATA/SEEK_HOLE would.
func TestMemFileNextData(t *testing.T) {
	m := NewMemFile(nil, 0)
	for _, pg := range []int64{0, 2, 3} {
		if _, err := m.WriteAt([]byte{1}, pg*pageSize+5); err != nil {
			t.Fatal(err)
		}
	}
	m.Truncate(3*pageSize + 100)
	for _, c := range []struct{ off, start, end int64 }{
		{0, 0, pageSize},
		{10, 10, pageSize},
		{pageSize, 2 * pageSize, 3*pageSize + 100},
		{3 * pageSize, 3 * pageSize, 3*pageSize + 100},
	} {
		start, end, err := m.NextData(c.off)
		if err != nil || start != c.start || end != c.end {
			t.Errorf("NextData(%d) = %d, %d, %v; want %d, %d", c.off, start, end, err, c.start, c.end)
		}
	}
	if _, _, err := m.NextData(4 * pageSize); !errors.Is(err, io.EOF) {
		t.Errorf("NextData past the data: %v, want EOF", err)
	}
}
