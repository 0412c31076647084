package fuzz

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"vhdkit/engine"
	"vhdkit/fuzz/vhdgen"
)

// FuzzReference holds the engine to vhdgen's reference decoder, which
// shares no code with it, on any bytes: an image the reference decodes
// opens in the engine and reads the same; one the reference refuses is
// refused by the engine's open or check. Seeded with the generator's
// single images, valid and damaged, so the fuzzer starts from every
// quirk and mutation. (Differencing images are judged on their
// structure: their parents are not here.)
func FuzzReference(f *testing.F) {
	for i := range 200 {
		c := vhdgen.Generate(9, i, vhdgen.DefaultOptions)
		b, err := c.Build()
		if err != nil || b.Files[0].Size() > maxInput {
			continue
		}
		f.Add(b.Files[0].Bytes(0, b.Files[0].Size()))
	}
	noParents := func(string) (*vhdgen.File, bool) { return nil, false }
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxInput {
			return
		}
		v, rerr := vhdgen.Decode(vhdgen.FileOf(data), noParents)
		if rerr != nil && !vhdgen.IsRefused(rerr) {
			return // too big for the reference
		}
		refused := rerr != nil && !strings.HasPrefix(rerr.(*vhdgen.Refused).Why, "no parent with the UUID")
		img, why := engineOpen(data)
		switch {
		case refused && img != nil:
			img.Close()
			t.Fatalf("the engine opens an image the reference refuses: %v", rerr)
		case !refused && img == nil:
			t.Fatalf("the engine refuses an image the reference reads (%v): %s", rerr, why)
		case img == nil:
			return
		}
		defer img.Close()
		if v == nil { // a differencing image: its structure agreed
			if img.Type() != engine.TypeDifferencing {
				t.Fatalf("the reference wants a parent, the engine opens a %s image", img.Type())
			}
			return
		}
		if img.Type().String() != v.Type || img.Size() != v.Size {
			t.Fatalf("the engine opens a %s disk of %d bytes, the reference a %s of %d", img.Type(), img.Size(), v.Type, v.Size)
		}
		got := make([]byte, min(v.Size, readBudget))
		if _, err := img.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Equal(got, v.Raw[:len(got)]) {
			t.Fatalf("the engine reads other bytes than the reference")
		}
	})
}

// engineOpen opens data read-only, as vhd would judge it: nil and why
// when the open fails or the check finds damage no repair fixes.
func engineOpen(data []byte) (*engine.Image, string) {
	rep, err := engine.Check(NewMemFile(data, 0), engine.CheckOptions{})
	if err != nil {
		return nil, err.Error()
	}
	for _, p := range rep.Problems {
		if p.Fatal && !p.Fixable {
			return nil, p.String()
		}
	}
	img, err := engine.OpenFile(NewMemFile(data, 0), "fuzz.vhd", engine.Options{ReadOnly: true})
	if err != nil {
		return nil, err.Error()
	}
	return img, ""
}
