package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"vhdkit/engine/crashfile"
)

// gapImage is a fixed image file of size bytes whose data is data
// (zeros after it), with gap bytes of junk between the data and a
// footer of 512 bytes, or of 511 (an old Virtual PC footer) if short.
func gapImage(t *testing.T, size int64, data []byte, gap int64, short bool) []byte {
	t.Helper()
	f := crashfile.New()
	img, err := CreateFile(f, "img", CreateOptions{Type: TypeFixed, Size: size, UUID: UUID{4}, Time: time.Unix(1e9, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	b := f.Bytes()
	footer := b[len(b)-FooterSize:]
	if short {
		footer = footer[:footerSize511]
	}
	out := append([]byte{}, b[:size]...)
	out = append(out, bytes.Repeat([]byte{0x5a}, int(gap))...)
	return append(out, footer...)
}

var gapCases = []struct {
	gap   int64
	short bool
}{{2, false}, {2, true}, {511, false}, {512, false}, {513, true}, {4096, false}}

// TestFixedGapFooterRewrittenInPlace: a write to a fixed image with
// bytes between its data and footer rewrites the footer (its new
// timestamp) where it was, so the file still ends with it. (Found by
// FuzzWrite: the footer went right after the data, and a reopen found
// junk in the last sector.)
func TestFixedGapFooterRewrittenInPlace(t *testing.T) {
	const size = 64 << 10
	for _, c := range gapCases {
		t.Run(fmt.Sprintf("gap %d short %v", c.gap, c.short), func(t *testing.T) {
			f := crashfile.FromBytes(gapImage(t, size, nil, c.gap, c.short))
			img, err := OpenFile(f, "img", Options{})
			if err != nil {
				t.Fatal(err)
			}
			old := img.Footer().Timestamp
			data := bytes.Repeat([]byte{7}, 4096)
			if _, err := img.WriteAt(data, 8192); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			img, err = OpenFile(f.Reopen(), "img", Options{ReadOnly: true})
			if err != nil {
				t.Fatalf("reopen after a write: %v", err)
			}
			defer img.Close()
			if img.Footer().Timestamp == old {
				t.Error("the footer was not stamped")
			}
			got := make([]byte, len(data))
			img.ReadAt(got, 8192)
			if !bytes.Equal(got, data) {
				t.Error("the write did not read back")
			}
		})
	}
}

// TestCrashDuringFixedGapRepair: repair cuts the gap; a power loss at
// any of its syncs leaves an image that opens at its size with its data,
// and a second repair finishes the job.
func TestCrashDuringFixedGapRepair(t *testing.T) {
	const size = 64 << 10
	data := randBytes(rand.New(rand.NewPCG(5, 6)), size)
	for _, c := range gapCases {
		t.Run(fmt.Sprintf("gap %d short %v", c.gap, c.short), func(t *testing.T) {
			orig := gapImage(t, size, data, c.gap, c.short)
			f := crashfile.FromBytes(orig)
			if rep, err := Check(f, CheckOptions{}); err != nil || rep.OK() {
				t.Fatalf("check does not report the gap: %v %+v", err, rep)
			}
			did, err := RepairFile(f, "img", RepairOptions{})
			if err != nil || len(did) != 1 {
				t.Fatalf("repair: %v %q", err, did)
			}
			verifyFixed(t, f.Reopen(), size, data, "after repair", true)
			syncs := f.Syncs()
			for k := 1; k <= syncs; k++ {
				for _, after := range []bool{false, true} {
					f := crashfile.FromBytes(orig)
					crashed := crashAtSync(f, k, after, rand.New(rand.NewPCG(uint64(k), 9)), 4)
					if _, err := RepairFile(f, "img", RepairOptions{}); err != nil {
						t.Fatal(err)
					}
					for i, cf := range *crashed {
						where := fmt.Sprintf("sync %d/%d (after=%v) variant %d", k, syncs, after, i)
						verifyFixed(t, cf.Reopen(), size, data, where, false)
						if _, err := RepairFile(cf, "img", RepairOptions{}); err != nil {
							t.Fatalf("%s: second repair: %v", where, err)
						}
						verifyFixed(t, cf.Reopen(), size, data, where+", repaired again", true)
					}
				}
			}
		})
	}
}

// verifyFixed opens f and checks its size and data, and with clean that
// check finds nothing at all.
func verifyFixed(t *testing.T, f *crashfile.File, size int64, data []byte, where string, clean bool) {
	t.Helper()
	if clean {
		if rep, err := Check(f, CheckOptions{}); err != nil || !rep.OK() {
			t.Fatalf("%s: check: %v %+v", where, err, rep)
		}
	}
	img, err := OpenFile(f, "img", Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("%s: open: %v", where, err)
	}
	defer img.Close()
	if img.Size() != size {
		t.Fatalf("%s: size %d, want %d", where, img.Size(), size)
	}
	got := make([]byte, size)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatalf("%s: read: %v", where, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%s: data changed", where)
	}
}
