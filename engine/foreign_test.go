package engine

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// Images made by other tools (testdata/foreign, see its README): each
// must open with the right type and size, read as zeros, pass Check and
// take writes that qemu-img then reads back.

const foreignDir = "../testdata/foreign"

type foreignImage struct {
	file    string
	typ     DiskType
	creator string
	size    int64 // the engine's size, and vhdiinfo's
	// qemuSize is what qemu-img 7.2 reports: it sizes by CHS geometry
	// for creators it does not know ("vbox"), so it sees 32 KiB less of
	// vbox.vhd than every other reader.
	qemuSize int64
}

var foreignImages = []foreignImage{
	// Creator "qemu": the size is the CHS product (964/5/17), which
	// here equals current size.
	{"qemu.vhd", TypeDynamic, "qemu", 41953280, 41953280},
	{"vbox.vhd", TypeDynamic, "vbox", 41943040, 41909760},
	{"win8.vhd", TypeDynamic, "win ", 41943040, 41943040},
	{"win8.1-1GB.vhd", TypeDynamic, "win ", 1 << 30, 1 << 30},
	{"win8-child.vhd", TypeDifferencing, "win ", 41943040, 41943040},
	// blktap's creator is "tap\0"; printable() trims the NUL.
	{"xapi.vhd", TypeDynamic, "tap", 41943040, 41943040},
}

func TestForeignImagesOpen(t *testing.T) {
	for _, fi := range foreignImages {
		t.Run(fi.file, func(t *testing.T) {
			path := filepath.Join(foreignDir, fi.file)
			img, err := Open(path, Options{ReadOnly: true})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer img.Close()
			ft := img.Footer()
			if img.Type() != fi.typ || img.Size() != fi.size || ft.Creator() != fi.creator {
				t.Errorf("type %s, size %d, creator %q; want %s, %d, %q", img.Type(), img.Size(), ft.Creator(), fi.typ, fi.size, fi.creator)
			}
			if img.FooterFromCopy() {
				t.Errorf("footer at the end was not used")
			}
			if img.AllocatedBytes() != 0 {
				t.Errorf("%d bytes allocated; the images carry metadata only", img.AllocatedBytes())
			}
			ext, err := img.Extents(0, img.Size())
			if err != nil || len(ext) != 1 || ext[0] != (Extent{0, img.Size(), ExtentHole}) {
				t.Errorf("extents %v, %v; want one hole", ext, err)
			}
			if fi.typ == TypeDifferencing {
				return // TestForeignDifferencing reads it
			}
			mustReadZeros(t, img)
		})
	}
}

// TestForeignImagesPeers records what qemu-img and vhdiinfo make of the
// same files, so a disagreement with the engine shows up here.
func TestForeignImagesPeers(t *testing.T) {
	for _, fi := range foreignImages {
		path := filepath.Join(foreignDir, fi.file)
		if got := qemuVirtualSize(t, path); got != fi.qemuSize {
			t.Errorf("%s: qemu-img virtual-size %d, want %d", fi.file, got, fi.qemuSize)
		}
		rep, got := vhdiinfoReport(t, path)
		if got != fi.size {
			t.Errorf("%s: vhdiinfo media size %d, engine %d", fi.file, got, fi.size)
		}
		wantType := map[DiskType]string{TypeDynamic: "Dynamic", TypeDifferencing: "Differential"}[fi.typ]
		if !bytes.Contains([]byte(rep), []byte("Disk type\t\t: "+wantType)) {
			t.Errorf("%s: vhdiinfo does not call it %s:\n%s", fi.file, wantType, rep)
		}
	}
}

// TestForeignImagesCheck: Check finds nothing wrong with any of them.
// Windows leaves slack before the first block (so block data lands 4 KiB
// aligned) and blktap keeps a batmap after the BAT; neither is damage.
func TestForeignImagesCheck(t *testing.T) {
	for _, fi := range foreignImages {
		rep, err := CheckPath(filepath.Join(foreignDir, fi.file), CheckOptions{Bitmaps: true})
		if err != nil {
			t.Errorf("%s: check: %v", fi.file, err)
			continue
		}
		if rep.Type != fi.typ.String() || rep.Size != fi.size || rep.Blocks != 0 {
			t.Errorf("%s: report %+v; want %s, %d bytes, no blocks", fi.file, rep, fi.typ, fi.size)
		}
		for _, p := range rep.Problems {
			t.Errorf("%s: %s", fi.file, p)
		}
	}
}

// TestForeignDifferencing: win8-child.vhd (Windows 10) opens as a single
// layer, names its parent win8.vhd by UUID, name and both Windows
// locators, and reads through to the parent once it is given one.
func TestForeignDifferencing(t *testing.T) {
	child, err := Open(filepath.Join(foreignDir, "win8-child.vhd"), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()
	parent, err := Open(filepath.Join(foreignDir, "win8.vhd"), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()

	h := child.Header()
	if h.ParentUUID != parent.Footer().UUID {
		t.Errorf("parent UUID %s, win8.vhd is %s", h.ParentUUID, parent.Footer().UUID)
	}
	if want := `C:\Users\sergi\Downloads\win8.vhd`; h.ParentName != want {
		t.Errorf("parent name %q, want %q", h.ParentName, want)
	}
	if h.ParentTimestamp != 0 {
		t.Errorf("parent timestamp %d; Windows wrote 0", h.ParentTimestamp)
	}
	raw, err := os.ReadFile(filepath.Join(foreignDir, "win8-child.vhd"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{LocatorW2ku: `C:\Users\sergi\Downloads\win8.vhd`, LocatorW2ru: `.\win8.vhd`}
	got := map[string]string{}
	for _, l := range h.Locators {
		if l.Empty() {
			continue
		}
		data := raw[l.DataOffset : l.DataOffset+uint64(l.DataLength)]
		p, err := DecodeLocatorPath(l.CodeString(), data)
		if err != nil {
			t.Errorf("locator %q: %v", l.CodeString(), err)
		}
		got[l.CodeString()] = p
	}
	if len(got) != len(want) || got[LocatorW2ku] != want[LocatorW2ku] || got[LocatorW2ru] != want[LocatorW2ru] {
		t.Errorf("locators %q, want %q", got, want)
	}

	// Alone, the child holds nothing and cannot read its parent's data.
	buf := make([]byte, 4096)
	if _, err := child.ReadAt(buf, 0); err == nil {
		t.Errorf("reading a differencing image without its parent succeeded")
	}
	child.SetParent(parent)
	mustReadZeros(t, child)
}

// TestForeignImagesWrite writes a pattern into a copy of each image
// through the engine; qemu-img must read the same bytes, and Check must
// stay clean. QEMU reads a differencing image as a plain dynamic one,
// which is right here: win8.vhd, its parent, is all zeros.
func TestForeignImagesWrite(t *testing.T) {
	dir := t.TempDir()
	for i, fi := range foreignImages {
		t.Run(fi.file, func(t *testing.T) {
			path := filepath.Join(dir, fi.file)
			copyFile(t, filepath.Join(foreignDir, fi.file), path)
			img, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if fi.typ == TypeDifferencing {
				parent, err := Open(filepath.Join(foreignDir, "win8.vhd"), Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				defer parent.Close()
				img.SetParent(parent)
			}
			model := newModel(t, filepath.Join(dir, "model.raw"), img.Size())
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for k := 0; k < 12; k++ {
				n := 1 + rng.Int64N(300000)
				off := rng.Int64N(img.Size() - n)
				p := randomBytes(rng, n)
				if _, err := img.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				model.write(t, p, off)
			}
			// The last byte of the disk, through a sub-sector write.
			if _, err := img.WriteAt([]byte{0x5a}, img.Size()-1); err != nil {
				t.Fatal(err)
			}
			model.write(t, []byte{0x5a}, img.Size()-1)
			if fi.typ != TypeDifferencing {
				sameAsModel(t, img, model)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			checkClean(t, path)
			if fi.qemuSize < fi.size {
				// qemu-img sees only the CHS part of vbox.vhd; the bytes
				// past it are left out of the model it is compared with.
				model.f.Truncate(fi.qemuSize)
			}
			qemuMustRead(t, path, model.path, dir)
		})
	}
}

// qemuMustRead fails unless qemu-img reads the VHD at path as exactly the
// raw file model: compared by qemu-img compare and by converting to raw.
func qemuMustRead(t *testing.T, path, model, dir string) {
	t.Helper()
	runTool(t, "qemu-img", "compare", "-q", "-f", "vpc", "-F", "raw", path, model)
	sameFiles(t, qemuToRaw(t, path, dir), model)
}
