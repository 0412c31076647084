package engine

import (
	"errors"
	"path/filepath"
	"testing"
)

// TestStampFixesTheTimestamp: an image opened and not written has not
// stamped its footer; Stamp does, durably, and a write and a flush after
// it leave the timestamp alone (a child recorded it). Fixed and dynamic
// alike; a read-only image is refused.
func TestStampFixesTheTimestamp(t *testing.T) {
	for _, typ := range []DiskType{TypeFixed, TypeDynamic} {
		path := filepath.Join(t.TempDir(), "d.vhd")
		img, err := Create(path, CreateOptions{Type: typ, Size: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		created := img.Footer().Timestamp
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		img, err = Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := img.Stamp(); err != nil {
			t.Fatal(err)
		}
		stamped := img.Footer().Timestamp
		if stamped == created {
			t.Fatalf("%s: Stamp left the timestamp at %d", typ, created)
		}
		if _, err := img.WriteAt(make([]byte, 4096), 8192); err != nil {
			t.Fatal(err)
		}
		if err := img.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := img.Footer().Timestamp; got != stamped {
			t.Fatalf("%s: a flush after Stamp changed the timestamp from %d to %d", typ, stamped, got)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		ro, err := Open(path, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := ro.Footer().Timestamp; got != stamped {
			t.Fatalf("%s: the file holds timestamp %d, Stamp set %d", typ, got, stamped)
		}
		if err := ro.Stamp(); !errors.Is(err, ErrReadOnly) {
			t.Fatalf("%s: Stamp of a read-only image: %v, want ErrReadOnly", typ, err)
		}
		ro.Close()
		checkClean(t, path)
	}
}
