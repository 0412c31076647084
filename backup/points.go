package backup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"vhdkit/chains"
	"vhdkit/engine"
)

// Finding a backup's earlier point in a chain, and the points a chain
// keeps.

// ErrNoSuchPoint: the earlier point asked for has no marker in the chain
// any more (its changes were folded into the layers below, or it never
// was a point of this disk).
var ErrNoSuchPoint = errors.New("no layer of the chain holds the changes since that point")

// Since is what a backup lists the changes since: the earlier point and
// how many of the top layers (from the new point down) hold them.
type Since struct {
	Point  engine.UUID
	Layers int
}

// FindSince finds in layers (a chain, top first, whose top is the point
// being cut) the changes since an earlier point: the newest marker when
// want is zero (none: a full backup only, Layers 0), else the marker of
// point want, or of the point whose backup has UUID want.
func FindSince(layers []chains.Layer, want engine.UUID) (Since, error) {
	for i, l := range layers {
		u, ok := MarkerOf(l.Path)
		if !ok {
			continue
		}
		if want.IsZero() || u == want || BackupUUID(u) == want {
			return Since{Point: u, Layers: i + 1}, nil
		}
	}
	if want.IsZero() {
		return Since{}, nil
	}
	return Since{}, fmt.Errorf("point %s: %w (ending the next backup with 'vhd backup end PATH EXPORT' folds them down, unless ended with 'vhd backup end PATH EXPORT --keep', and 'vhd merge' of a marker layer does too): take a full backup", want, ErrNoSuchPoint)
}

// Point is a point a chain still holds as a layer: a layer whose UUID a
// marker above it names.
type Point struct {
	Path string
	UUID engine.UUID
	// Kept: 'vhd backup end --keep' kept it.
	Kept bool
	// Base: the chain's bottom layer, which has no parent to fold into.
	Base bool
}

// PointsOf lists the points held in layers (top first).
func PointsOf(layers []chains.Layer) []Point {
	var out []Point
	for i, l := range layers {
		u, ok := MarkerOf(l.Path)
		if !ok || i+1 >= len(layers) {
			continue
		}
		below := layers[i+1]
		if below.Image.Footer().UUID == u {
			out = append(out, Point{Path: below.Path, UUID: u, Kept: IsKept(below.Path, u), Base: i+2 == len(layers)})
		}
	}
	return out
}

// The mark of a kept point: a small file beside its layer,
//
//	LAYER.kept   "vhdkit kept point UUID\n"
//
// naming the layer's UUID, so a mark left beside another file of the same
// name (after the point was folded away by hand) means nothing.

// KeptPath is the mark of the point whose layer is at path.
func KeptPath(layer string) string { return layer + ".kept" }

func keptLine(u engine.UUID) string { return "vhdkit kept point " + u.String() + "\n" }

// IsKept reports whether the layer at path, of UUID u, is marked kept.
func IsKept(path string, u engine.UUID) bool {
	f, err := os.Open(KeptPath(path))
	if err != nil {
		return false
	}
	defer f.Close()
	got, ok := readMark(engine.OSFile(f))
	return ok && got == u
}

// MarkKept marks the layer at path (of UUID u) kept. Order: the mark is
// written whole under a temporary name and synced, renamed over its
// name, and the folder synced; a crash leaves no mark or a whole one
// (IsKept accepts nothing else), and the mark exists durably once this
// returns.
func MarkKept(path string, u engine.UUID) error {
	final := KeptPath(path)
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := writeMark(engine.OSFile(f), u); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return syncDir(filepath.Dir(final))
}

// writeMark writes a mark's line and syncs it.
func writeMark(f engine.File, u engine.UUID) error {
	if _, err := f.WriteAt([]byte(keptLine(u)), 0); err != nil {
		return err
	}
	return f.Sync()
}

// Unkeep removes a kept mark.
func Unkeep(path string) error {
	err := os.Remove(KeptPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// readMark reads a mark from f: the UUID it names, if it is whole.
func readMark(f engine.File) (engine.UUID, bool) {
	b := make([]byte, 128)
	n, _ := f.ReadAt(b, 0)
	s := string(b[:n])
	rest, ok := strings.CutPrefix(s, "vhdkit kept point ")
	if !ok || !strings.HasSuffix(rest, "\n") {
		return engine.UUID{}, false
	}
	u, err := ParseUUID(strings.TrimSuffix(rest, "\n"))
	return u, err == nil && keptLine(u) == s
}
