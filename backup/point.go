package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"vhdkit/engine"
)

// Names and identities (doc.go, "Points and change tracking").
//
// A point is identified by the UUID of its frozen layer (the top that
// begin froze). The new top begin cuts over it is named
//
//	STEM.since-UUID.vhd
//
// in the frozen layer's folder, where STEM is the frozen layer's name
// without ".vhd" and without a marker of its own: that layer, and every
// layer cut above it later, hold exactly what was written after point
// UUID. A backup of point P is a VHD whose UUID is BackupUUID(P), so a
// backup file says which point it holds and an incremental can check its
// base.

// markerRE matches a marker name's tail: ".since-" and a UUID, then
// ".vhd".
var markerRE = regexp.MustCompile(`\.since-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.vhd$`)

// MarkerPath is the new top a backup of point (the UUID of top, which
// the backup freezes) is cut under.
func MarkerPath(top string, point engine.UUID) string {
	stem := strings.TrimSuffix(filepath.Base(top), ".vhd")
	if loc := markerRE.FindStringIndex(filepath.Base(top)); loc != nil {
		stem = filepath.Base(top)[:loc[0]]
	}
	return filepath.Join(filepath.Dir(top), stem+".since-"+point.String()+".vhd")
}

// MarkerOf reads the point a layer's name says it holds the changes
// since, if it is a marker.
func MarkerOf(path string) (engine.UUID, bool) {
	m := markerRE.FindStringSubmatch(filepath.Base(path))
	if m == nil {
		return engine.UUID{}, false
	}
	u, err := ParseUUID(m[1])
	return u, err == nil
}

// BackupUUID is the UUID of a backup of point: derived from it (SHA-256,
// as a version 8 UUID), so it differs from the point's own (the two may
// sit in one folder, where a shared UUID would make vhd take one for the
// other's parent) yet names the point.
func BackupUUID(point engine.UUID) engine.UUID {
	sum := sha256.Sum256([]byte("vhdkit backup of point " + point.String()))
	var u engine.UUID
	copy(u[:], sum[:16])
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return u
}

// ParseUUID reads a UUID as engine.UUID.String writes it.
func ParseUUID(s string) (engine.UUID, error) {
	var u engine.UUID
	h := strings.ReplaceAll(s, "-", "")
	if len(s) != 36 || len(h) != 32 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("%q is not a UUID (want 8-4-4-4-12 hex digits)", s)
	}
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, fmt.Errorf("%q is not a UUID: %w", s, err)
	}
	return u, nil
}

// Identity is what a backup export says about itself in its NBD
// description: the point it serves and the point its vhdkit:changed
// context lists the changes since (zero if none).
type Identity struct {
	Point engine.UUID
	Since engine.UUID
}

// HasSince reports whether changes since an earlier point are listed.
func (id Identity) HasSince() bool { return !id.Since.IsZero() }

// descPrefix starts a backup export's description.
const descPrefix = "vhdkit backup point="

// Description is the NBD description of a backup export:
//
//	vhdkit backup point=UUID since=UUID|none
func (id Identity) Description() string {
	since := "none"
	if id.HasSince() {
		since = id.Since.String()
	}
	return descPrefix + id.Point.String() + " since=" + since
}

// ParseDescription reads a description Description wrote; ok is false
// for any other (a server that is not a vhdkit backup export).
func ParseDescription(s string) (Identity, bool) {
	rest, found := strings.CutPrefix(s, descPrefix)
	if !found {
		return Identity{}, false
	}
	point, since, found := strings.Cut(rest, " since=")
	if !found {
		return Identity{}, false
	}
	var id Identity
	var err error
	if id.Point, err = ParseUUID(point); err != nil {
		return Identity{}, false
	}
	if since != "none" {
		if id.Since, err = ParseUUID(since); err != nil || id.Since.IsZero() {
			return Identity{}, false
		}
	}
	return id, true
}
