package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenRawParent: a raw disk image opened as a parent reads as a fixed
// disk of the file's whole sectors, read-only, with no UUID and no
// timestamp.
func TestOpenRawParent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.raw")
	data := bytes.Repeat([]byte{0xab, 0xcd}, 700) // 1400 bytes: two whole sectors
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := OpenRawParent(f, path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	ft := img.Footer()
	if !img.IsRaw() || img.Size() != 1024 || ft.DiskType != TypeFixed || !ft.UUID.IsZero() || ft.Timestamp != 0 {
		t.Fatalf("raw parent: raw %v size %d footer %+v", img.IsRaw(), img.Size(), ft)
	}
	got := make([]byte, 1024)
	if _, err := img.ReadAt(got, 0); err != nil || !bytes.Equal(got, data[:1024]) {
		t.Fatalf("read: %v", err)
	}
	if _, err := img.WriteAt([]byte{1}, 0); err == nil {
		t.Fatal("a raw parent took a write")
	}
}
