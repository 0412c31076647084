package engine

import (
	"bytes"
	"testing"

	"vhdkit/engine/crashfile"
)

// Where a relocation leaves the metadata: before the first block
// whenever it fits (Xen's vhd-util check rejects anything else), past
// the data only when it does not, and then MetadataAfterData says so.

type layoutCase struct {
	name string
	make func(t *testing.T) (*crashfile.File, *Image)
	op   func(img *Image) error
	// after is what MetadataAfterData must say; sameTable that the BAT
	// must not have moved (it grew in place); sameFile that the file
	// must not have grown.
	after, sameTable, sameFile bool
}

func withData(t *testing.T, f *crashfile.File, img *Image, n int) (*crashfile.File, *Image) {
	t.Helper()
	if img.Type() == TypeDifferencing {
		img.SetParent(zeroDisk(img.Size()))
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{9}, n), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	return f, img
}

func packedOpen(t *testing.T, typ DiskType) (*crashfile.File, *Image) {
	t.Helper()
	var parent *ParentInfo
	if typ == TypeDifferencing {
		parent = &ParentInfo{UUID: UUID{8}, Name: "old.vhd", Locators: []LocatorPath{{LocatorW2ru, `.\old.vhd`}, {LocatorW2ku, `\srv\old.vhd`}, {LocatorMacX, "/srv/old.vhd"}}}
	}
	f := packedImage(t, typ, 4<<20, 1<<20, parent, bytes.Repeat([]byte{9}, 2<<20))
	img, err := OpenFile(f, "packed", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if typ == TypeDifferencing {
		img.SetParent(zeroDisk(img.Size()))
	}
	return f, img
}

var newLink = ParentInfo{UUID: UUID{9}, Name: "new.vhd", Locators: []LocatorPath{{LocatorW2ru, `.\new.vhd`}, {LocatorW2ku, `\srv\images\new.vhd`}, {LocatorMacX, "/srv/images/new.vhd"}}}

var layoutCases = []layoutCase{
	{
		name: "vhdkit dynamic: the BAT grows in place",
		make: func(t *testing.T) (*crashfile.File, *Image) {
			f, img := newTestImage(t, TypeDynamic, 16<<20, 2<<20)
			return withData(t, f, img, 3<<20)
		},
		op:        func(img *Image) error { return img.Resize(1<<30, false) },
		sameTable: true, sameFile: true,
	},
	{
		name: "vhdkit differencing: set-parent in the reserved room",
		make: func(t *testing.T) (*crashfile.File, *Image) {
			// Blocks of 4 KiB: data aligned to 4 KiB, so only the
			// reserved room is free before the first block.
			f := crashfile.New()
			img, err := CreateFile(f, "diff", CreateOptions{Type: TypeDifferencing, Size: 1 << 20, BlockSize: 4096, Parent: &ParentInfo{UUID: UUID{8}, Name: "old.vhd", Locators: []LocatorPath{{LocatorW2ru, `.\old.vhd`}}}})
			if err != nil {
				t.Fatal(err)
			}
			return withData(t, f, img, 64<<10)
		},
		op:        func(img *Image) error { return img.SetParentLink(newLink) },
		sameTable: true, sameFile: true,
	},
	{
		name:      "packed blktap differencing: set-parent goes past the end, then back",
		make:      func(t *testing.T) (*crashfile.File, *Image) { return packedOpen(t, TypeDifferencing) },
		op:        func(img *Image) error { return img.SetParentLink(newLink) },
		sameTable: true, sameFile: true,
	},
	{
		name:      "packed blktap: grows within the BAT's sector",
		make:      func(t *testing.T) (*crashfile.File, *Image) { return packedOpen(t, TypeDynamic) },
		op:        func(img *Image) error { return img.Resize(40<<20, false) },
		sameTable: true, sameFile: true,
	},
	{
		name:  "packed blktap: a BAT that cannot fit in front stays after the data",
		make:  func(t *testing.T) (*crashfile.File, *Image) { return packedOpen(t, TypeDynamic) },
		op:    func(img *Image) error { return img.Resize(200<<20, false) },
		after: true,
	},
}

func TestRelocateKeepsMetadataInFront(t *testing.T) {
	for _, c := range layoutCases {
		t.Run(c.name, func(t *testing.T) {
			f, img := c.make(t)
			before := img.Footer()
			table, size := img.Header().TableOffset, mustSize(t, f)
			if err := c.op(img); err != nil {
				t.Fatal(err)
			}
			if got := img.MetadataAfterData(); got != c.after {
				t.Errorf("MetadataAfterData = %v, want %v (header at %#x, BAT at %#x)", got, c.after, img.Footer().DataOffset, img.Header().TableOffset)
			}
			if c.sameTable && img.Header().TableOffset != table {
				t.Errorf("the BAT moved from %#x to %#x", table, img.Header().TableOffset)
			}
			if got := mustSize(t, f); c.sameFile && got != size {
				t.Errorf("the file grew from %d to %d bytes", size, got)
			}
			ft := img.Footer()
			if ft.Creator() != before.Creator() || ft.Hidden != before.Hidden {
				t.Errorf("creator %q hidden %d became %q %d", before.Creator(), before.Hidden, ft.Creator(), ft.Hidden)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			checkFileClean(t, f)
			if img.sparse.batmap != nil {
				if _, ok := diskBatmap(t, f.Bytes()); !ok {
					t.Error("blktap does not trust the batmap")
				}
			}
			reread, err := OpenFile(f.Reopen(), "again", Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer reread.Close()
			if reread.MetadataAfterData() != c.after {
				t.Error("MetadataAfterData differs once reopened")
			}
		})
	}
}

func mustSize(t *testing.T, f *crashfile.File) int64 {
	t.Helper()
	n, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
