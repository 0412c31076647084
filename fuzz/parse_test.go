package fuzz

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"

	"vhdkit/engine"
)

// corruptOnly fails the test unless err is nil or a corruption error: a
// parser over bytes has no I/O to fail.
func corruptOnly(t *testing.T, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, engine.ErrCorrupt) {
		t.Fatalf("parser error is not ErrCorrupt: %v", err)
	}
	var ce *engine.CorruptError
	if err != nil && !errors.As(err, &ce) {
		t.Fatalf("parser error is not a *CorruptError: %v", err)
	}
}

// footerSeeds are the footers of the seed images: the last 512 (or 511)
// bytes, and the copy at offset 0.
func footerSeeds() [][]byte {
	var out [][]byte
	for _, img := range seedImages() {
		if len(img) < engine.FooterSize {
			continue
		}
		out = append(out, img[len(img)-engine.FooterSize:], img[len(img)-511:], img[:engine.FooterSize])
	}
	return out
}

func FuzzFooter(f *testing.F) {
	for _, b := range footerSeeds() {
		f.Add(b)
	}
	f.Add([]byte("conectix"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ft, err := engine.ParseFooter(b, 1024)
		corruptOnly(t, err)
		if err != nil {
			return
		}
		if len(b) != 512 && len(b) != 511 {
			t.Fatalf("a %d-byte footer parsed", len(b))
		}
		if ft.Short != (len(b) == 511) {
			t.Fatalf("Short is %v for %d bytes", ft.Short, len(b))
		}
		// Accessors.
		_ = ft.Creator() + ft.HostOS() + ft.DiskType.String() + ft.Geometry.String()
		_ = engine.VHDTime(ft.Timestamp)
		if ft.Geometry.Bytes() < 0 {
			t.Fatalf("geometry %v has negative size", ft.Geometry)
		}
		if ft.CurrentSize > engine.MaxSize || ft.CurrentSize%engine.SectorSize != 0 {
			t.Fatalf("current size %d accepted", ft.CurrentSize)
		}
		// Round trip: Marshal(Parse(b)) parses to the same footer and keeps
		// every byte the footer defines; the checksum matches when the
		// reserved bytes are zero.
		orig := ft
		raw := ft.Marshal()
		again, err := engine.ParseFooter(raw[:], 0)
		if err != nil {
			t.Fatalf("re-parse of marshalled footer: %v", err)
		}
		want := orig
		want.Short, want.Checksum = false, again.Checksum
		if again != want {
			t.Fatalf("round trip changed the footer:\n got %+v\nwant %+v", again, want)
		}
		if raw2 := again.Marshal(); raw2 != raw {
			t.Fatal("Marshal is not deterministic")
		}
		// Every byte but the checksum (which covers the reserved bytes
		// Marshal zeroes) and the reserved area.
		if !bytes.Equal(raw[:64], b[:64]) || !bytes.Equal(raw[68:86], b[68:86]) {
			t.Fatalf("marshalled footer's fields differ from the input:\n got %x\nwant %x", raw[:86], b[:86])
		}
		if isZero(b[86:]) {
			if orig.Checksum != again.Checksum {
				t.Fatalf("checksum %#x parsed, %#x recomputed", orig.Checksum, again.Checksum)
			}
			if !bytes.Equal(raw[:len(b)], b) {
				t.Fatal("footer with zero reserved bytes did not marshal to its input")
			}
		}
	})
}

func isZero(b []byte) bool { return allZero(b) }

func FuzzDynamicHeader(f *testing.F) {
	for _, img := range seedImages() {
		if len(img) >= 512+engine.HeaderSize && string(img[512:520]) == "cxsparse" {
			f.Add(img[512 : 512+engine.HeaderSize])
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := engine.ParseDynamicHeader(b, 512)
		corruptOnly(t, err)
		if err != nil {
			return
		}
		if len(b) != engine.HeaderSize {
			t.Fatalf("a %d-byte header parsed", len(b))
		}
		bs := h.BlockSize
		if bs < engine.MinBlockSize || bs > engine.MaxBlockSize || bs&(bs-1) != 0 {
			t.Fatalf("block size %d accepted", bs)
		}
		if h.TableOffset%engine.SectorSize != 0 || h.TableOffset > engine.MaxFileOffset {
			t.Fatalf("table offset %#x accepted", h.TableOffset)
		}
		if !utf8.ValidString(h.ParentName) {
			t.Fatalf("parent name %q is not UTF-8", h.ParentName)
		}
		for _, l := range h.Locators {
			_ = l.CodeString()
			_ = l.Empty()
		}
		orig := h
		raw := h.Marshal()
		again, err := engine.ParseDynamicHeader(raw[:], 512)
		if err != nil {
			t.Fatalf("re-parse of marshalled header: %v", err)
		}
		want := orig
		want.Checksum = again.Checksum
		if again != want {
			t.Fatalf("round trip changed the header:\n got %+v\nwant %+v", again, want)
		}
		if raw2 := again.Marshal(); raw2 != raw {
			t.Fatal("Marshal is not deterministic")
		}
		// Every field outside the parent name (which is canonicalised:
		// bytes after a NUL dropped, bad UTF-16 replaced) and the
		// reserved areas is kept byte for byte.
		if !bytes.Equal(raw[:36], b[:36]) || !bytes.Equal(raw[40:60], b[40:60]) || !bytes.Equal(raw[576:768], b[576:768]) {
			t.Fatal("marshalled header's fields differ from the input")
		}
	})
}

var locatorCodes = []string{
	engine.LocatorW2ku, engine.LocatorW2ru, engine.LocatorMacX, engine.LocatorMac,
	engine.LocatorWi2r, engine.LocatorWi2k, engine.LocatorNone, "xyz\x00",
}

// batmapSeeds are the batmap headers of the seed images: every sector
// that starts with blktap's cookie.
func batmapSeeds() [][]byte {
	var out [][]byte
	for _, img := range seedImages() {
		for off := 0; off+engine.BatmapHeaderSize <= len(img); off += engine.SectorSize {
			if string(img[off:off+8]) == "tdbatmap" {
				out = append(out, img[off:off+engine.BatmapHeaderSize])
			}
		}
	}
	return out
}

func FuzzBatmapHeader(f *testing.F) {
	for _, b := range batmapSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := engine.ParseBatmapHeader(b, 2048)
		corruptOnly(t, err)
		if err != nil {
			return
		}
		if len(b) != engine.BatmapHeaderSize {
			t.Fatalf("a %d-byte batmap header parsed", len(b))
		}
		if h.Version>>16 != 1 || h.Version > 0x00010002 {
			t.Fatalf("version %#x accepted", h.Version)
		}
		if h.MapOffset < engine.FooterSize || h.MapOffset%engine.SectorSize != 0 || h.MapOffset > engine.MaxFileOffset {
			t.Fatalf("map offset %#x accepted", h.MapOffset)
		}
		if h.MapSize == 0 || h.MapBytes() <= 0 || h.MapBytes() > 1<<29 {
			t.Fatalf("map size %d accepted", h.MapSize)
		}
		_ = h.String()
		raw := h.Marshal()
		again, err := engine.ParseBatmapHeader(raw[:], 0)
		if err != nil || again != h {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, h)
		}
		// Every field, marker and keyhash kept byte for byte; the
		// reserved bytes written as zeros, as libvhd writes them.
		if !bytes.Equal(raw[:94], b[:94]) || !bytes.Equal(raw[94:], make([]byte, engine.BatmapHeaderSize-94)) {
			t.Fatal("marshalled header differs from the input")
		}
	})
}

func FuzzLocatorPath(f *testing.F) {
	for _, l := range seedParent().Locators {
		f.Add(engine.EncodeLocatorPath(l.Code, l.Path))
	}
	f.Add([]byte("file://localhost/a%20b%zz%4"))
	// Decodes to "localhost/x", which EncodeLocatorPath once wrote as
	// "file://localhost/x": the path "/x".
	f.Add([]byte("file://%6Cocalhost/x"))
	f.Add([]byte{'a', 0, 0x00, 0xd8, 'b', 0, 0, 0, 'c', 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, code := range locatorCodes {
			p, err := engine.DecodeLocatorPath(code, data)
			decodable := code == engine.LocatorW2ku || code == engine.LocatorW2ru || code == engine.LocatorMacX
			if decodable != (err == nil) {
				t.Fatalf("%q: decodable %v, error %v", code, decodable, err)
			}
			if err != nil {
				continue
			}
			if len(p) > 3*len(data)+1 {
				t.Fatalf("%q: %d bytes decoded to a %d-byte path", code, len(data), len(p))
			}
			if code != engine.LocatorMacX && !utf8.ValidString(p) {
				t.Fatalf("%q: path %q is not UTF-8", code, p)
			}
			if code != engine.LocatorMacX && strings0(p) {
				t.Fatalf("%q: path %q holds a NUL", code, p)
			}
			// A decoded path encodes to data that decodes to it again.
			enc := engine.EncodeLocatorPath(code, p)
			back, err := engine.DecodeLocatorPath(code, enc)
			if err != nil || back != p {
				t.Fatalf("%q: path %q encoded to %q, decoded to %q (%v)", code, p, enc, back, err)
			}
		}
	})
}

func strings0(s string) bool { return bytes.IndexByte([]byte(s), 0) >= 0 }
