package fuzz

import (
	"bytes"
	"testing"

	"vhdkit/engine"
)

// detectSeeds are the starts of files of every kind Detect knows, as the
// real tools write them (abridged), and a few near misses.
func detectSeeds() [][]byte {
	put := func(n, off int, magic string) []byte {
		b := make([]byte, n)
		copy(b[off:], magic)
		return b
	}
	vdi := put(4096, 0, "<<< QEMU VM Virtual Disk Image >>>\n")
	copy(vdi[0x40:], "\x7f\x10\xda\xbe")
	gpt := put(4096, 510, "\x55\xaa")
	copy(gpt[512:], "EFI PART")
	return [][]byte{
		put(1024, 0, "QFI\xfb\x00\x00\x00\x03\x00\x00\x00\x00"),
		put(1024, 0, "QFI\xfb\x00\x00\x00\x01"),
		put(1024, 0, "QED\x00\x00\x00\x01\x00"),
		put(1024, 0, "vhdxfileQ\x00E\x00M\x00U\x00"),
		put(1024, 0, "KDMV\x01\x00\x00\x00\x03\x00\x00\x00"),
		[]byte("# Disk DescriptorFile\nversion=1\nCID=34aadf89\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"),
		vdi,
		put(1024, 0, "WithouFreSpacExt"),
		put(1024, 0, "\x1f\x8b\x08\x08"),
		put(1024, 0, "\xfd7zXZ\x00\x00\x04"),
		put(1024, 0, "\x28\xb5\x2f\xfd"),
		put(1024, 0, "BZh91AY&SY"),
		put(1024, 0, "PK\x03\x04\x14\x00"),
		put(1024, 257, "ustar\x0000"),
		put(4096, 0, "LUKS\xba\xbe\x00\x02"),
		put(engine.DetectHeadSize, 0x8000, "\x01CD001\x01"),
		gpt,
		put(1024, 510, "\x55\xaa"),
		put(1024, 512, "cxsparse"),
		[]byte("conectix"),
	}
}

// FuzzDetect runs the format detector on any bytes, as the start and end
// of a file, and holds it to its rules: it never fails or panics, it is
// deterministic, a VHD footer at the end always wins, a file it calls
// something other than a VHD carries no VHD cookie where a footer would
// be, every kind but unknown is named, and DetectFile reads the same
// head and tail from a file as the test cuts from the bytes.
func FuzzDetect(f *testing.F) {
	for _, b := range detectSeeds() {
		f.Add(b)
	}
	for _, img := range seedImages() {
		f.Add(img[:min(len(img), engine.DetectHeadSize)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 2*engine.DetectHeadSize {
			return
		}
		head := b[:min(len(b), engine.DetectHeadSize)]
		var tail []byte
		if len(b) >= engine.FooterSize {
			tail = b[len(b)-engine.FooterSize:]
		}
		c := engine.Detect(head, tail)
		if again := engine.Detect(bytes.Clone(head), bytes.Clone(tail)); again != c {
			t.Fatalf("Detect is not deterministic: %+v then %+v", c, again)
		}
		if c.Kind < engine.ContentUnknown || c.Kind > engine.ContentRawData {
			t.Fatalf("kind %d", c.Kind)
		}
		if (c.Kind == engine.ContentUnknown) != (c.Format == "" && c.What == "") || c.Kind != engine.ContentUnknown && (c.Format == "" || c.What == "") {
			t.Fatalf("kind %d named %q, %q", c.Kind, c.Format, c.What)
		}
		cookie := func(p []byte, off int) bool { return len(p) >= off+8 && string(p[off:off+8]) == "conectix" }
		if tail != nil && (cookie(tail, 0) || cookie(tail, 1)) && c.Kind != engine.ContentVHD {
			t.Fatalf("a footer cookie at the end, yet %+v", c)
		}
		if cookie(head, 0) && c.Kind != engine.ContentVHD {
			t.Fatalf("a footer cookie at 0, yet %+v", c)
		}
		if len(b) < engine.FooterSize && c.Kind == engine.ContentVHD && !cookie(head, 0) {
			t.Fatalf("a %d-byte file without a footer cookie at 0 called a VHD", len(b))
		}
		// The footer wins over whatever the start holds.
		footer := make([]byte, engine.FooterSize)
		copy(footer, "conectix")
		if w := engine.Detect(head, footer); w.Kind != engine.ContentVHD {
			t.Fatalf("a footer at the end did not win: %+v", w)
		}
		got, err := engine.DetectFile(NewMemFile(b, 0))
		if err != nil || got != c {
			t.Fatalf("DetectFile = %+v, %v; Detect = %+v", got, err, c)
		}
	})
}
