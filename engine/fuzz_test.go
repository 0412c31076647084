package engine

import (
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzBAT decodes a BAT (ParseBAT) and runs the block placement validator
// (batProblems) on it, comparing the validator's verdict with a brute
// force check of every pair of blocks. The input is a 17-byte preamble
// (block size shift, data end, table offset, one parent locator span)
// followed by the table. The other fuzz targets are in package fuzz; this
// one lives here because batProblems is unexported.
func FuzzBAT(f *testing.F) {
	seed := func(shift byte, dataEnd, tableOff, locOff, locLen uint32, entries ...uint32) []byte {
		b := []byte{shift}
		b = binary.BigEndian.AppendUint32(b, dataEnd)
		b = binary.BigEndian.AppendUint32(b, tableOff)
		b = binary.BigEndian.AppendUint32(b, locOff)
		b = binary.BigEndian.AppendUint32(b, locLen)
		for _, e := range entries {
			b = binary.BigEndian.AppendUint32(b, e)
		}
		return b
	}
	// 4 KiB blocks (shift 3: 512<<3), BAT at sector 3, locator at 4.
	f.Add(seed(3, 100, 3, 4, 512, 8, batUnused, 17, 26))
	f.Add(seed(3, 100, 3, 4, 512, 8, 9, batUnused))     // overlapping blocks
	f.Add(seed(3, 30, 3, 4, 512, 8, 26))                // past the data area
	f.Add(seed(3, 100, 3, 4, 512, 4, batUnused))        // over the locator
	f.Add(seed(12, 1<<24, 3, 0, 0, 8, 4096+8, 8192+16)) // 2 MiB blocks
	f.Fuzz(func(t *testing.T, b []byte) {
		const pre = 17
		if len(b) < pre || len(b) > pre+4*1024 {
			return
		}
		be := binary.BigEndian
		blockSize := uint32(MinBlockSize) << (b[0] % 20)
		blockLen := bitmapBytes(blockSize) + int64(blockSize)
		dataEnd := int64(be.Uint32(b[1:])) * SectorSize
		tableOff := int64(be.Uint32(b[5:])) * SectorSize
		raw := b[pre:]
		n := len(raw) / 4
		bat := ParseBAT(raw, n)
		for i, e := range bat {
			if e != be.Uint32(raw[4*i:]) {
				t.Fatalf("entry %d decoded as %#x", i, e)
			}
		}
		reserved := []span{
			{0, FooterSize, "footer copy"},
			{FooterSize, HeaderSize, "dynamic header"},
			{tableOff, batBytes(uint32(n)), "BAT"},
		}
		if l := int64(be.Uint32(b[13:])); l > 0 {
			reserved = append(reserved, span{int64(be.Uint32(b[9:])) * SectorSize, l, "parent locator"})
		}

		errs := batProblems(bat, tableOff, blockLen, dataEnd, reserved, n*8+8)
		for _, err := range errs {
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || ce.Struct != "BAT" {
				t.Fatalf("problem %v is not a BAT *CorruptError", err)
			}
			if ce.Offset < tableOff || ce.Offset >= tableOff+4*int64(n) || (ce.Offset-tableOff)%4 != 0 {
				t.Fatalf("problem %v does not point at an entry of the table at %#x", err, tableOff)
			}
		}
		if bad := batOracle(bat, blockLen, dataEnd, reserved); (len(errs) > 0) != bad {
			t.Fatalf("batProblems found %d problems (%v), brute force says bad=%v", len(errs), errs, bad)
		}
		if one := batProblems(bat, tableOff, blockLen, dataEnd, reserved, 1); len(one) > 1 || (len(one) == 1) != (len(errs) > 0) {
			t.Fatalf("with max 1: %d problems; without: %d", len(one), len(errs))
		}
	})
}

// batOracle reports whether any allocated block of bat runs past dataEnd,
// overlaps a reserved span, or overlaps another block that fits, by
// comparing every pair.
func batOracle(bat []uint32, blockLen, dataEnd int64, reserved []span) bool {
	var in []int64
	for _, e := range bat {
		if e == batUnused {
			continue
		}
		off := int64(e) * SectorSize
		if off+blockLen > dataEnd {
			return true
		}
		for _, r := range reserved {
			if off < r.off+r.len && r.off < off+blockLen {
				return true
			}
		}
		in = append(in, off)
	}
	for i := range in {
		for j := i + 1; j < len(in); j++ {
			if in[i] < in[j]+blockLen && in[j] < in[i]+blockLen {
				return true
			}
		}
	}
	return false
}
