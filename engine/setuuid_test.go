package engine

import (
	"errors"
	"strings"
	"testing"
)

// TestSetUUID: every type takes the new UUID in every footer copy and
// keeps its timestamp, parent link and data; the nil UUID and a
// read-only image are refused; the UUID it has already writes nothing.
func TestSetUUID(t *testing.T) {
	for _, c := range setUUIDCases {
		t.Run(c.name, func(t *testing.T) {
			f, img, data := setupRelocate(t, c)
			old := img.Footer()
			if err := img.SetUUID(UUID{}); err == nil || !strings.Contains(err.Error(), "nil UUID") {
				t.Fatalf("nil UUID: %v", err)
			}
			writes := f.Writes()
			if err := img.SetUUID(old.UUID); err != nil || f.Writes() != writes {
				t.Fatalf("the same UUID: %v, %d writes", err, f.Writes()-writes)
			}
			if err := img.SetUUID(newID); err != nil {
				t.Fatal(err)
			}
			if got := img.Footer().UUID; got != newID {
				t.Fatalf("in memory: %s", got)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if !(c.typ == TypeFixed && c.gap > 0) {
				checkFileClean(t, f)
			}
			if got := verifySetUUID(t, c, f.Reopen(), old, data, "after"); got != newID {
				t.Fatalf("reopened with UUID %s", got)
			}
			ro, err := OpenFile(f.Reopen(), "img", Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			if err := ro.SetUUID(UUID{5}); !errors.Is(err, ErrReadOnly) {
				t.Fatalf("read-only: %v", err)
			}
		})
	}
}
