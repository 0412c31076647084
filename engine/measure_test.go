package engine

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestDynamicFileSizeAndFileOffset writes blocks of new dynamic images in
// a random order and checks the file length against DynamicFileSize, and
// that FileOffset points at the bytes ReadAt returns.
func TestDynamicFileSizeAndFileOffset(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, bs := range []int64{512, 4096, 64 << 10, 2 << 20} {
		path := filepath.Join(t.TempDir(), "d.vhd")
		size := 40*bs + 1024
		img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: size, BlockSize: bs})
		if err != nil {
			t.Fatal(err)
		}
		blocks := rng.Perm(41)[:17]
		for _, b := range blocks {
			if _, err := img.WriteAt(randBytes(rng, 512), int64(b)*bs); err != nil {
				t.Fatal(err)
			}
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		want, err := DynamicFileSize(size, bs, int64(len(blocks)))
		st, _ := os.Stat(path)
		if err != nil || st.Size() != want {
			t.Errorf("block size %d: file is %d bytes, DynamicFileSize says %d (%v)", bs, st.Size(), want, err)
		}
		img, err = Open(path, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(path)
		for _, b := range blocks {
			off := int64(b)*bs + 100
			pos, ok := img.FileOffset(off)
			got := make([]byte, 300)
			img.ReadAt(got, off)
			if !ok || !bytes.Equal(raw[pos:pos+300], got) {
				t.Errorf("block size %d, offset %d: FileOffset %d (%v) does not hold the disk's bytes", bs, off, pos, ok)
			}
		}
		if _, ok := img.FileOffset(size); ok {
			t.Errorf("FileOffset past the end answers")
		}
		img.Close()
		checkClean(t, path)
	}
	if _, err := DynamicFileSize(1<<20, 3000, 0); err == nil {
		t.Error("a block size that is not a power of two: no error")
	}
}
