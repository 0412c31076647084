package engine

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// checkClean fails the test unless the image at path passes Check,
// bitmaps included. Every test that writes an image ends with it.
func checkClean(t testing.TB, path string) {
	t.Helper()
	rep, err := CheckPath(path, CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	for _, p := range rep.Problems {
		t.Errorf("check %s: %s", path, p)
	}
}

func TestSmokeDynamicRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []DiskType{TypeFixed, TypeDynamic} {
		path := filepath.Join(dir, typ.String()+".vhd")
		const size = 100<<20 + 512*7
		img, err := Create(path, CreateOptions{Type: typ, Size: size})
		if err != nil {
			t.Fatal(err)
		}
		model := make([]byte, size)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 200; i++ {
			off := rng.Int64N(size - 70000)
			n := rng.IntN(70000)
			buf := make([]byte, n)
			for j := range buf {
				buf[j] = byte(rng.Uint32())
			}
			if i%5 == 0 {
				clear(buf)
			}
			if _, err := img.WriteAt(buf, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], buf)
		}
		got := make([]byte, size)
		if _, err := img.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model) {
			t.Fatalf("%s: read back differs", typ)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		checkClean(t, path)
		raw := filepath.Join(dir, "model.raw")
		os.WriteFile(raw, model, 0o644)
		out, err := exec.Command("qemu-img", "compare", "-f", "vpc", "-F", "raw", path, raw).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img compare: %v\n%s", err, out)
		}
	}
}
