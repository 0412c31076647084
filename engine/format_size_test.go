package engine

import (
	"os"
	"path/filepath"
	"testing"
)

// Which size is the disk's: current size, or the CHS product for the
// creators that size by geometry (Footer.DiskSize).

func TestFooterDiskSize(t *testing.T) {
	const cur = 10<<20 + 3*512
	chs := GeometryFor(cur).Bytes() // 10483712: CHS rounds down
	maxGeo := Geometry{65535, 16, 255}
	for _, tc := range []struct {
		creator string
		geo     Geometry
		cur     int64
		want    int64
	}{
		{"win ", GeometryFor(cur), cur, cur},
		{"qem2", GeometryFor(cur), cur, cur},
		{"tap\x00", GeometryFor(cur), cur, cur},
		{"vbox", GeometryFor(cur), cur, cur},
		{"vpc ", GeometryFor(cur), cur, chs},
		{"qemu", GeometryFor(cur), cur, chs},
		// The CHS maximum: the disk is larger than CHS can say.
		{"qemu", maxGeo, 200 << 30, 200 << 30},
		{"vpc ", maxGeo, 200 << 30, 200 << 30},
		// A geometry larger than current size, or none, is not trusted.
		{"vpc ", Geometry{1000, 16, 63}, cur, cur},
		{"qemu", Geometry{}, cur, cur},
	} {
		f := Footer{CurrentSize: uint64(tc.cur), Geometry: tc.geo}
		copy(f.CreatorApp[:], tc.creator)
		if got := f.DiskSize(); got != tc.want {
			t.Errorf("creator %q, geometry %s, current size %d: DiskSize %d, want %d", tc.creator, tc.geo, tc.cur, got, tc.want)
		}
	}
}

// patchFooter rewrites the footer at the end of the file at path, and
// the copy at offset 0 of a dynamic or differencing image, with a fresh
// checksum.
func patchFooter(t testing.TB, path string, fn func(*Footer)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ft, err := ParseFooter(b[len(b)-FooterSize:], 0)
	if err != nil {
		t.Fatal(err)
	}
	fn(&ft)
	raw := ft.Marshal()
	copy(b[len(b)-FooterSize:], raw[:])
	if ft.DiskType != TypeFixed {
		copy(b, raw[:])
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDiskSizeAgreesWithQEMU: an image whose creator is "vpc " or "qemu"
// and whose current size is not a CHS product has the size qemu-img
// gives it; vhdiinfo alone goes by current size.
func TestDiskSizeAgreesWithQEMU(t *testing.T) {
	dir := t.TempDir()
	const size = 10<<20 + 3*512
	for _, typ := range []DiskType{TypeDynamic, TypeFixed} {
		for _, creator := range []string{"vpc ", "qemu", "win "} {
			path := filepath.Join(dir, typ.String()+"-"+creator[:3]+".vhd")
			img, err := Create(path, CreateOptions{Type: typ, Size: size})
			if err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			patchFooter(t, path, func(f *Footer) { copy(f.CreatorApp[:], creator) })
			img, err = Open(path, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			got := img.Size()
			img.Close()
			want := int64(size)
			if creator != "win " {
				want = GeometryFor(size).Bytes()
			}
			if got != want {
				t.Errorf("%s %q: engine size %d, want %d", typ, creator, got, want)
			}
			if q := qemuVirtualSize(t, path); q != got {
				t.Errorf("%s %q: qemu-img says %d bytes, engine %d", typ, creator, q, got)
			}
			if _, v := vhdiinfoReport(t, path); v != size {
				t.Errorf("%s %q: vhdiinfo says %d bytes, want current size %d", typ, creator, v, size)
			}
			checkClean(t, path)
		}
	}
}
