package fuzzrun

import (
	"fmt"
	"regexp"
	"strings"

	"vhdkit/fuzz/vhdgen"
)

// Finding kinds.
const (
	KindCrash           = "crash"
	KindHang            = "hang"
	KindMismatch        = "mismatch"
	KindRefusedValid    = "refused-valid"
	KindAcceptedInvalid = "accepted-invalid"
)

// Finding is what differs between a target and the reference on a case.
type Finding struct {
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
	// Signature identifies the defect, not the case: findings with one
	// signature are one finding.
	Signature string `json:"signature"`
	// others are the other byte mismatches of the case, by signature:
	// a smaller case keeps a finding if it shows it anywhere.
	others map[string]*Finding
}

// expecter is a target with documented, deliberate deviations from the
// reference (qemu-img's CHS sizing): its expected size and bytes.
type expecter interface {
	expect(b *vhdgen.Built) (size int64, raw []byte)
}

// metadataReader is a target that reads only the footer and header (an
// information tool): damage elsewhere is not its to notice.
type metadataReader interface{ metadataOnly() }

// judges says whether t must refuse an image with mutation m.
func judges(t Target, m *vhdgen.Mutation) bool {
	if _, ok := t.(metadataReader); !ok {
		return true
	}
	return m != nil && m.Layer == 0 && (strings.HasPrefix(m.Name, "footer") || strings.HasPrefix(m.Name, "header"))
}

// damaged names an accepted-invalid finding's defect: the mutation, or
// a damaged parent, however damaged (a target that does not open
// parents accepts them all).
func damaged(m *vhdgen.Mutation) string {
	if m.Layer > 0 {
		return "a damaged parent"
	}
	return m.Name
}

// Classify compares what t observed with the reference's view of b; nil
// when they agree.
func Classify(t Target, b *vhdgen.Built, o Observation) *Finding {
	shape := shapeOf(b)
	switch {
	case o.Crash != "":
		return newFinding(KindCrash, o.Crash+" ("+o.Why+")", KindCrash+"|"+normalise(o.Crash))
	case o.Hang:
		return newFinding(KindHang, o.Why, KindHang+"|"+shape)
	case b.View == nil && !o.Refused && judges(t, b.Case.Mutation):
		return newFinding(KindAcceptedInvalid, fmt.Sprintf("read an image that must be refused: %s (%s)", b.Refusal, b.Case.Describe()), KindAcceptedInvalid+"|"+damaged(b.Case.Mutation))
	case b.View == nil:
		return nil
	case o.Refused:
		return newFinding(KindRefusedValid, "refused a valid image ("+b.Case.Describe()+"): "+o.Why, KindRefusedValid+"|"+normalise(o.Why))
	}
	size, raw := b.View.Size, b.View.Raw
	if e, ok := t.(expecter); ok {
		size, raw = e.expect(b)
	}
	switch {
	case o.Size >= 0 && o.Size != size:
		return newFinding(KindMismatch, fmt.Sprintf("size %d, the reference says %d (%s)", o.Size, size, b.Case.Describe()), KindMismatch+"|size|"+sizeSource(b, o.Size))
	case o.Type != "" && o.Type != b.View.Type:
		return newFinding(KindMismatch, fmt.Sprintf("type %s, the reference says %s", o.Type, b.View.Type), KindMismatch+"|type|"+b.View.Type+">"+o.Type)
	case o.Raw != nil && int64(len(o.Raw)) != size:
		return newFinding(KindMismatch, fmt.Sprintf("read %d bytes of a %d-byte disk", len(o.Raw), size), KindMismatch+"|length|"+shape)
	}
	if o.Raw == nil || raw == nil {
		return nil
	}
	var first *Finding
	for s := int64(0); s*vhdgen.SectorSize < size; s++ {
		lo, hi := s*vhdgen.SectorSize, (s+1)*vhdgen.SectorSize
		if string(o.Raw[lo:hi]) == string(raw[lo:hi]) {
			continue
		}
		where := whereFrom(b.View, s)
		sig := KindMismatch + "|bytes|" + where
		detail := fmt.Sprintf("bytes differ at sector %d (offset %#x), where the disk holds %s; the target read %s (%s)",
			s, lo, where, whatRead(o.Raw[lo:hi]), b.Case.Describe())
		if first == nil {
			first = newFinding(KindMismatch, detail, sig)
			first.others = map[string]*Finding{}
		}
		if _, ok := first.others[sig]; !ok {
			first.others[sig] = newFinding(KindMismatch, detail, sig)
		}
	}
	return first
}

// showing is f, or the other defect of signature sig f's case also
// shows (a byte mismatch of another kind further on); nil if neither.
func (f *Finding) showing(sig string) *Finding {
	switch {
	case f == nil:
		return nil
	case f.Signature == sig:
		return f
	}
	return f.others[sig]
}

// whereFrom says what the reference read sector s from: what tells one
// defect from another in a byte mismatch.
func whereFrom(v *vhdgen.View, s int64) string {
	f := v.From[s]
	switch {
	case f.Layer == 0 && v.Layers == 1 && f.Partial:
		return "the image's own data in a partly written block"
	case f.Layer == 0 && v.Layers == 1:
		return "the image's own data"
	case f.Layer == 0 && f.Partial:
		return "the top layer's data in a partly written block"
	case f.Layer == 0:
		return "the top layer's data"
	case f.Layer > 0 && f.Partial:
		return "parent data under a clear bit of a partly written block"
	case f.Layer > 0:
		return "parent data where the top layer has no sector"
	case f.Partial:
		return "zeros under a clear bit of a partly written block"
	}
	return "zeros where no layer has data"
}

// shapeOf is the case's layer types, top first ("differencing>dynamic").
func shapeOf(b *vhdgen.Built) string {
	var s []string
	for _, l := range b.Case.Layers {
		s = append(s, map[int]string{vhdgen.TypeFixed: "fixed", vhdgen.TypeDynamic: "dynamic", vhdgen.TypeDifferencing: "differencing"}[l.Type])
	}
	return strings.Join(s, ">")
}

var (
	numbers = regexp.MustCompile(`0x[0-9a-fA-F]+|\d+`)
	paths   = regexp.MustCompile(`'[^']*'|"[^"]*"|\S*/\S*`)
)

// normalise strips what varies between cases from a message (paths,
// numbers), so one defect's messages share a signature.
func normalise(s string) string {
	s = paths.ReplaceAllString(s, "P")
	s = numbers.ReplaceAllString(s, "N")
	if len(s) > 160 {
		s = s[:160]
	}
	return s
}

// sizeSource says where a wrong size seems to come from: the footer's
// current size, its CHS geometry, or neither.
func sizeSource(b *vhdgen.Built, got int64) string {
	l := b.Case.Layers[0]
	switch got {
	case l.Size:
		return "the current size field"
	case l.Geometry.Bytes():
		return "the CHS geometry"
	}
	return "neither the current size nor the geometry"
}

func newFinding(kind, detail, sig string) *Finding {
	return &Finding{Kind: kind, Detail: detail, Signature: sig}
}

func whatRead(sec []byte) string {
	for _, c := range sec {
		if c != 0 {
			return "other bytes"
		}
	}
	return "zeros"
}
