package fuzz

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"vhdkit/engine"
	"vhdkit/fuzz/vhdgen"
)

// maxSeedFile bounds the testdata images used as seeds: the mutator is
// slow on big inputs, and a small image exercises every structure.
const maxSeedFile = 2 << 20

// seedImages are whole images: made here by the engine (small block sizes
// keep them a few KiB) and the small images in the repository's testdata/.
var seedImages = sync.OnceValue(func() [][]byte {
	var out [][]byte
	for _, mk := range []func() ([]byte, error){
		func() ([]byte, error) { return makeImage(engine.TypeFixed, 64<<10, 0, nil, writeSome) },
		func() ([]byte, error) { return makeImage(engine.TypeDynamic, 64<<10, 4096, nil, writeSome) },
		func() ([]byte, error) { return makeImage(engine.TypeDynamic, 1<<20+512*3, 512, nil, writeSome) },
		func() ([]byte, error) { return makeImage(engine.TypeDynamic, 32<<20, 0, nil, nil) },
		// The largest block size in a file of a few KiB: Check once
		// allocated a whole block (256 MiB) for it.
		func() ([]byte, error) { return makeImage(engine.TypeDynamic, 1<<20, engine.MaxBlockSize, nil, nil) },
		func() ([]byte, error) {
			return makeImage(engine.TypeDifferencing, 64<<10, 4096, seedParent(), writeSome)
		},
		func() ([]byte, error) {
			// A locator whose data space (1 MiB) runs past the end of the
			// file: the first block allocated used to land inside it,
			// after which the image no longer opened.
			b, err := makeImage(engine.TypeDifferencing, 64<<10, 4096, seedParent(), nil)
			if err != nil {
				return nil, err
			}
			binary.BigEndian.PutUint32(b[512+576+4:], 1<<20)
			return vhdgen.FixChecksums(b), nil
		},
		// blktap's creator: the engine keeps blktap's batmap in them.
		func() ([]byte, error) { return makeTapImage(engine.TypeDynamic, 64<<10, 4096, nil, writeSome) },
		func() ([]byte, error) {
			return makeTapImage(engine.TypeDifferencing, 64<<10, 4096, seedParent(), writeSome)
		},
		func() ([]byte, error) { // the 511-byte footer of pre-2004 Virtual PC
			b, err := makeImage(engine.TypeFixed, 8<<10, 0, nil, writeSome)
			if err != nil {
				return nil, err
			}
			return b[:len(b)-1], nil
		},
	} {
		b, err := mk()
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	return append(out, testdataImages()...)
})

func seedParent() *engine.ParentInfo {
	return &engine.ParentInfo{
		UUID:      engine.UUID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		Timestamp: 12345,
		Name:      "parent.vhd",
		Locators: []engine.LocatorPath{
			{Code: engine.LocatorW2ku, Path: `C:\vms\parent.vhd`},
			{Code: engine.LocatorW2ru, Path: `.\parent.vhd`},
			{Code: engine.LocatorMacX, Path: "/var/lib/vms/parent 1.vhd"},
		},
	}
}

// writeSome leaves a few blocks fully, partly and not allocated, and a
// range of zeros written (elided on a dynamic image).
func writeSome(img *engine.Image) error {
	size := img.Size()
	pat := make([]byte, 6000)
	for i := range pat {
		pat[i] = byte(i*7 + 1)
	}
	for _, off := range []int64{0, 512 * 9, size / 2, size - 1536} {
		n := min(int64(len(pat)), size-off)
		if _, err := img.WriteAt(pat[:n], off); err != nil {
			return err
		}
	}
	_, err := img.WriteAt(make([]byte, min(8192, size-size/4)), size/4)
	return err
}

func makeImage(typ engine.DiskType, size, blockSize int64, parent *engine.ParentInfo, fill func(*engine.Image) error) ([]byte, error) {
	return makeImageBy(nil, typ, size, blockSize, parent, fill)
}

// makeTapImage is makeImage with blktap's creator, which gives dynamic
// and differencing images blktap's batmap.
func makeTapImage(typ engine.DiskType, size, blockSize int64, parent *engine.ParentInfo, fill func(*engine.Image) error) ([]byte, error) {
	return makeImageBy(&engine.Creator{App: [4]byte{'t', 'a', 'p'}, Version: 0x00010003}, typ, size, blockSize, parent, fill)
}

func makeImageBy(creator *engine.Creator, typ engine.DiskType, size, blockSize int64, parent *engine.ParentInfo, fill func(*engine.Image) error) ([]byte, error) {
	f := NewMemFile(nil, 0)
	img, err := engine.CreateFile(f, "seed.vhd", engine.CreateOptions{
		Type: typ, Size: size, BlockSize: blockSize, Parent: parent, Creator: creator,
		UUID: engine.UUID{0xaa, 1}, Time: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
	})
	if err != nil {
		return nil, err
	}
	if parent != nil {
		img.SetParent(patternDisk{size})
	}
	if fill != nil {
		if err := fill(img); err != nil {
			return nil, err
		}
	}
	if err := img.Close(); err != nil {
		return nil, err
	}
	return f.Bytes(), nil
}

// testdataImages reads the small VHDs under the repository's testdata/.
func testdataImages() [][]byte {
	var out [][]byte
	for _, pat := range []string{"../testdata/*.vhd", "../testdata/*/*.vhd", "../testdata/*/*/*.vhd"} {
		names, _ := filepath.Glob(pat)
		for _, n := range names {
			if st, err := os.Stat(n); err != nil || st.Size() > maxSeedFile {
				continue
			}
			if b, err := os.ReadFile(n); err == nil {
				out = append(out, b)
			}
		}
	}
	return out
}

// patternDisk is a read-only parent whose every byte is a function of its
// offset, so a read that shows the parent can be checked.
type patternDisk struct{ size int64 }

func patternByte(off int64) byte { return byte(off>>9) ^ byte(off) ^ 0x5a }

func (d patternDisk) Size() int64 { return d.size }
func (d patternDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > d.size {
		return 0, engine.ErrOutOfRange
	}
	n := int(min(int64(len(p)), d.size-off))
	for i := range n {
		p[i] = patternByte(off + int64(i))
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (d patternDisk) WriteAt([]byte, int64) (int, error)       { return 0, engine.ErrReadOnly }
func (d patternDisk) Flush() error                             { return nil }
func (d patternDisk) Zero(int64, int64, engine.ZeroMode) error { return engine.ErrReadOnly }
func (d patternDisk) Trim(int64, int64) error                  { return engine.ErrReadOnly }
func (d patternDisk) ReadOnly() bool                           { return true }
func (d patternDisk) Close() error                             { return nil }
func (d patternDisk) Extents(off, n int64) ([]engine.Extent, error) {
	return []engine.Extent{{Off: off, Len: n, State: engine.ExtentData}}, nil
}
