package vhdgen

import (
	"math/rand/v2"
	"slices"
)

// Mutation names an edit of one layer's file from the catalogue, with the
// number that parameterises it (which entry, which value): enough to
// apply it again to the same layer, or to a smaller one while
// minimising.
type Mutation struct {
	Name  string `json:"name"`
	Layer int    `json:"layer"`
	Arg   uint64 `json:"arg"`
}

// target is what a mutation edits.
type target struct {
	f   *File
	l   *Layer
	lay Layout
	arg uint64
}

// mutator is one entry of the catalogue. apply edits t.f and reports
// whether it applied (a BAT edit needs an allocated block...).
type mutator struct {
	name  string
	apply func(t *target) bool
}

// Catalogue is the mutations' names, in catalogue order.
func Catalogue() []string {
	var names []string
	for _, m := range catalogue {
		names = append(names, m.name)
	}
	return names
}

func lookupMutator(name string) *mutator {
	i := slices.IndexFunc(catalogue, func(m mutator) bool { return m.name == name })
	if i < 0 {
		return nil
	}
	return &catalogue[i]
}

// Apply edits files (built from layers) by m; false if m does not apply
// to them.
func (m Mutation) Apply(files []*File, layers []Layer, lays []Layout) bool {
	mu := lookupMutator(m.Name)
	if mu == nil || m.Layer >= len(files) {
		return false
	}
	return mu.apply(&target{f: files[m.Layer], l: &layers[m.Layer], lay: lays[m.Layer], arg: m.Arg})
}

// randomMutation picks an entry of the catalogue for one of layers.
func randomMutation(rng *rand.Rand, layers []Layer) Mutation {
	return Mutation{Name: catalogue[rng.IntN(len(catalogue))].name, Layer: rng.IntN(len(layers)), Arg: rng.Uint64()}
}

// Edits of the structures. Field edits fix the structure's checksum, so
// the field itself is what gets judged; raw edits do not.

// footers edits the footer at the end and, in a sparse image, the copy
// at offset 0.
func (t *target) footers(fix bool, fn func(ft []byte)) bool {
	offs := []int64{t.f.Size() - FooterSize}
	if t.l.Short {
		offs[0]++
	}
	if t.l.sparse() {
		offs = append(offs, 0)
	}
	for _, off := range offs {
		ft := t.f.Bytes(off, FooterSize)
		fn(ft)
		if fix {
			SetChecksum(ft, OffFooterChecksum)
		}
		t.f.WriteAt(ft[:min(FooterSize, t.f.Size()-off)], off)
	}
	return true
}

// header edits the dynamic header (sparse images only).
func (t *target) header(fix bool, fn func(h []byte)) bool {
	if !t.l.sparse() {
		return false
	}
	h := t.f.Bytes(FooterSize, HeaderSize)
	fn(h)
	if fix {
		SetChecksum(h, OffHdrChecksum)
	}
	t.f.WriteAt(h, FooterSize)
	return true
}

// setEntry sets BAT entry i.
func (t *target) setEntry(i int, v uint32) {
	var b [4]byte
	be.PutUint32(b[:], v)
	t.f.WriteAt(b[:], t.lay.TableOffset+4*int64(i))
}

// block picks an allocated block by the argument; -1 if none.
func (t *target) block(k uint64) int {
	if !t.l.sparse() || len(t.l.Blocks) == 0 {
		return -1
	}
	return t.l.Blocks[k%uint64(len(t.l.Blocks))]
}

func (t *target) pick(vals ...uint64) uint64 { return vals[t.arg%uint64(len(vals))] }

func put32(off int, v uint32) func([]byte) { return func(s []byte) { be.PutUint32(s[off:], v) } }
func put64(off int, v uint64) func([]byte) { return func(s []byte) { be.PutUint64(s[off:], v) } }
