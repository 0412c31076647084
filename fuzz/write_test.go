package fuzz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"vhdkit/engine"
	"vhdkit/fuzz/vhdgen"
)

const (
	// fileLimit bounds what a written image's file may hold in memory.
	fileLimit = 64 << 20
	// maxOpBytes bounds one write, zero or trim: the model keeps every
	// sector touched.
	maxOpBytes = 256 << 10
	opLen      = 6
	maxOps     = 16
)

// FuzzWrite opens an image from bytes for writing, applies a script of
// writes, zeros, trims and flushes decoded from ops, and keeps a model of
// every sector it touched. Then:
//   - the image reads back the model, before and after a close and
//     reopen (so what a flush wrote is what the next open sees);
//   - an image Check found no problem in before is left with no fatal
//     problem and no sector whose data its bitmap disowns;
//   - nothing panics, and the file's memory is bounded (MemFile limit).
func FuzzWrite(f *testing.F) {
	script := []byte{
		0, 0x00, 0x00, 0x10, 0x00, 0, // write 4 KiB at 0
		1, 0x40, 0x00, 0x03, 0x00, 77, // unaligned write
		2, 0x80, 0x00, 0x20, 0x00, 0, // write zeros
		6, 0, 0, 0, 0, 0, // flush
		3, 0x10, 0x00, 0x00, 0x20, 3, // zero, may deallocate
		4, 0x20, 0x00, 0x00, 0x08, 0, // zero, keep allocated
		5, 0x30, 0x00, 0x00, 0x40, 9, // trim
		7, 0x00, 0x00, 0, 0, 0, // whole first block trimmed
		7, 0xff, 0xff, 0, 0, 1, // whole last block zeroed
	}
	for _, b := range seedImages() {
		f.Add(b, script)
	}
	f.Fuzz(func(t *testing.T, data, ops []byte) {
		if len(data) > maxInput || len(ops) > maxOps*opLen {
			return
		}
		data = vhdgen.FixChecksums(data) // FuzzOpen covers bad checksums
		rep0, err := engine.Check(NewMemFile(data, 0), engine.CheckOptions{Bitmaps: true})
		if errors.Is(err, engine.ErrOtherFormat) || errors.Is(err, engine.ErrNoFooter) {
			return // not a VHD: nothing opens it for writing
		}
		if err != nil {
			t.Fatalf("Check of an in-memory file failed: %v", err)
		}
		mf := NewMemFile(data, fileLimit)
		img, err := engine.OpenFile(mf, "fuzz.vhd", engine.Options{})
		if err != nil {
			return
		}
		defer img.Close()
		m := &model{img: img, sectors: map[int64][]byte{}}
		if img.Type() == engine.TypeDifferencing {
			img.SetParent(patternDisk{img.Size()})
		}
		for i := 0; i+opLen <= len(ops); i += opLen {
			if err := m.apply(ops[i : i+opLen]); err != nil {
				if errors.Is(err, ErrTooBig) {
					return // the file outgrew its limit: nothing more to learn
				}
				t.Fatalf("op %x: %v", ops[i:i+opLen], err)
			}
		}
		m.verify(t, img, "before close")
		if err := img.Close(); err != nil {
			if errors.Is(err, ErrTooBig) {
				return
			}
			t.Fatalf("close: %v", err)
		}

		// The file is not copied out whole: a 256 MiB block makes it big,
		// if sparse. Check's stray-data scan reads only the pages the
		// file stores (MemFile.NextData), so it runs on every image.
		rep, err := engine.Check(mf.Clone(), engine.CheckOptions{})
		if err != nil {
			t.Fatalf("Check after writing: %v", err)
		}
		if rep0.OK() {
			for _, p := range rep.Problems {
				if p.Fatal || p.Code == engine.CodeDataUnderClearBit {
					t.Fatalf("a clean image has a problem after writes: %s", p)
				}
			}
		}
		img2, err := engine.OpenFile(mf.Clone(), "fuzz.vhd", engine.Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("reopen after writes: %v", err)
		}
		defer img2.Close()
		if img2.Type() == engine.TypeDifferencing {
			img2.SetParent(patternDisk{img2.Size()})
		}
		m.verify(t, img2, "after reopen")
		exts, err := img2.Extents(0, img2.Size())
		if err != nil {
			t.Fatalf("extents after reopen: %v", err)
		}
		checkExtents(t, exts, 0, img2.Size())
	})
}

// model is what the disk should hold at every sector a script touched.
type model struct {
	img     *engine.Image
	sectors map[int64][]byte
}

// load puts the sectors of [off, off+n) the model lacks into it, as the
// image holds them now.
func (m *model) load(off, n int64) error {
	for sec := off / 512; sec < (off+n+511)/512; sec++ {
		if _, ok := m.sectors[sec]; ok {
			continue
		}
		b := make([]byte, 512)
		if _, err := m.img.ReadAt(b, sec*512); err != nil {
			return err
		}
		m.sectors[sec] = b
	}
	return nil
}

// set applies fn to each byte position of [off, off+n) in the model.
func (m *model) set(off, n int64, fn func(pos int64) byte) {
	for pos := off; pos < off+n; pos++ {
		m.sectors[pos/512][pos%512] = fn(pos)
	}
}

// apply decodes and runs one op: kind, offset (a fraction of the disk),
// length, and a byte that shifts unaligned ops and seeds written data.
func (m *model) apply(op []byte) error {
	img := m.img
	size := img.Size()
	if size == 0 {
		return nil
	}
	kind := op[0] % 8
	off := int64(uint64(size) * uint64(binary.BigEndian.Uint16(op[1:])) >> 16)
	n := int64(binary.BigEndian.Uint16(op[3:]))
	x := op[5]
	switch kind {
	case 0, 2, 3, 4, 5: // aligned
		off = off &^ 511
		if kind >= 3 {
			n *= 512
		}
		n = (n + 511) &^ 511
	case 1: // unaligned
		off += int64(x)
	case 7: // a whole block
		bs := img.BlockSize()
		if bs == 0 {
			bs = 1 << 20
		}
		if bs > maxOpBytes {
			return nil
		}
		off = off / bs * bs
		n = bs
	}
	off = min(off, size)
	n = min(n, size-off, maxOpBytes)
	if err := m.load(off, n); err != nil {
		return err
	}
	pat := func(pos int64) byte { return byte(pos) ^ x ^ 0xa5 }
	zero := func(int64) byte { return 0 }
	switch kind {
	case 0, 1:
		p := make([]byte, n)
		for i := range p {
			p[i] = pat(off + int64(i))
		}
		if _, err := img.WriteAt(p, off); err != nil {
			return err
		}
		m.set(off, n, pat)
	case 2:
		if _, err := img.WriteAt(make([]byte, n), off); err != nil {
			return err
		}
		m.set(off, n, zero)
	case 3, 4:
		mode := engine.ZeroMayDeallocate
		if kind == 4 {
			mode = engine.ZeroKeepAllocated
		}
		if err := img.Zero(off, n, mode); err != nil {
			return err
		}
		m.set(off, n, zero)
	case 5, 7:
		if kind == 7 && x%2 == 1 {
			if err := img.Zero(off, n, engine.ZeroMayDeallocate); err != nil {
				return err
			}
			m.set(off, n, zero)
			break
		}
		if err := img.Trim(off, n); err != nil {
			return err
		}
		m.trimmed(off, n)
	case 6:
		return img.Flush()
	}
	return nil
}

// trimmed records a trim: whole sectors show what no layer holds (zeros,
// or the parent of a differencing image); partial sectors at the edges
// are zeroed.
func (m *model) trimmed(off, n int64) {
	diff := m.img.Type() == engine.TypeDifferencing
	m.set(off, n, func(pos int64) byte {
		whole := pos/512*512 >= off && pos/512*512+512 <= off+n
		if whole && diff {
			return patternByte(pos)
		}
		return 0
	})
}

func (m *model) verify(t *testing.T, img *engine.Image, when string) {
	t.Helper()
	got := make([]byte, 512)
	for sec, want := range m.sectors {
		if _, err := img.ReadAt(got, sec*512); err != nil {
			t.Fatalf("%s: read sector %d: %v", when, sec, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: sector %d (%#x) reads\n%x\nwant\n%x", when, sec, sec*512, got, want)
		}
	}
}
