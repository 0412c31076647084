package vhdgen

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// View is what a correct reader sees in an image: the expectation every
// target is judged against.
type View struct {
	Type string // "fixed", "dynamic", "differencing"
	Size int64
	// Raw is the whole disk, parents' data included.
	Raw []byte
	// Layers is the chain's depth: 1 plus the parents read.
	Layers int
	// From says, by disk sector, which layer the sector's bytes come from
	// (0 the top) and how: what a mismatch's signature is made of.
	From []SectorSource
}

// SectorSource is where the reference found a sector.
type SectorSource struct {
	Layer int8 // the layer that stores it, -1 none (zeros)
	// Partial: the top layer's block that holds the sector is partly
	// written: some of its sectors' bitmap bits are set, some clear.
	Partial bool
}

// Digest is the SHA-256 of the raw disk, in hex.
func (v *View) Digest() string {
	s := sha256.Sum256(v.Raw)
	return hex.EncodeToString(s[:])
}

// Refused is the reference's verdict on an image a reader must refuse.
type Refused struct{ Why string }

func (r *Refused) Error() string { return "must be refused: " + r.Why }

func refuse(format string, args ...any) error { return &Refused{fmt.Sprintf(format, args...)} }

// IsRefused reports whether err is the reference's refusal.
func IsRefused(err error) bool {
	var r *Refused
	return errors.As(err, &r)
}

// MaxReferenceDisk bounds the disks the reference decodes (it holds the
// whole raw disk); cases stay far below.
const MaxReferenceDisk = 64 << 20

// Lookup finds a parent by file name in the case's folder.
type Lookup func(name string) (*File, bool)

// maxDepth bounds the chains the reference follows (a loop of parents
// is refused, not followed for ever).
const maxDepth = 16

// Decode computes the view of the image f, finding parents with lookup.
func Decode(f *File, lookup Lookup) (*View, error) {
	return decode(f, lookup, 0)
}

func decode(f *File, lookup Lookup, depth int) (*View, error) {
	if depth >= maxDepth {
		return nil, refuse("more than %d layers (a loop of parents?)", maxDepth)
	}
	ft, err := readFooter(f)
	if err != nil {
		return nil, err
	}
	v := &View{Type: typeName(ft.typ), Size: ft.size, Layers: 1}
	if ft.typ == TypeFixed {
		if err := checkDecodable(ft.size); err != nil {
			return nil, err
		}
		v.Raw = f.Bytes(0, ft.size)
		v.From = fixedSources(ft.size)
		return v, nil
	}
	sp, err := readSparse(f, ft)
	if err != nil {
		return nil, err
	}
	var parent *View
	if ft.typ == TypeDifferencing {
		if parent, err = findParent(sp, ft, lookup, depth); err != nil {
			return nil, err
		}
		v.Layers += parent.Layers
	}
	if err := checkDecodable(ft.size); err != nil {
		return nil, err
	}
	v.Raw, v.From = sp.read(f, ft.size, parent)
	return v, nil
}

func typeName(t uint32) string {
	switch t {
	case TypeFixed:
		return "fixed"
	case TypeDynamic:
		return "dynamic"
	}
	return "differencing"
}

func fixedSources(size int64) []SectorSource {
	return make([]SectorSource, size/SectorSize) // all layer 0
}

// checkDecodable refuses to hold a disk larger than MaxReferenceDisk.
func checkDecodable(size int64) error {
	if size > MaxReferenceDisk {
		return fmt.Errorf("vhdgen: a disk of %d bytes is bigger than the reference decodes (%d)", size, MaxReferenceDisk)
	}
	return nil
}
