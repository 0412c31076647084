package engine

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pattern fills a model disk: random data, zero runs inside data, and
// untouched holes, at sizes and offsets that straddle chunks and blocks.
func patternOf(size int64) []byte {
	m := make([]byte, size)
	rng := rand.New(rand.NewPCG(7, 8))
	fill := func(off, n int64) {
		for i := off; i < off+n && i < size; i++ {
			m[i] = byte(rng.Uint32() | 1)
		}
	}
	fill(0, 4096)              // first sector
	fill(3<<20-100, 6<<20+300) // across blocks and chunks
	clear(m[4<<20 : 4<<20+2<<20])
	fill(17<<20+512, 1024)   // a lone sector run inside a block
	fill(size-5000, 5000)    // the tail
	fill(30<<20+4096, 12288) // a few pages
	return m
}

// rawFrom writes model into a new sparse raw file, leaving zeros as holes.
func rawFrom(t *testing.T, path string, model []byte) {
	t.Helper()
	d, err := CreateRaw(path, int64(len(model)))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(model); off += 4096 {
		end := min(off+4096, len(model))
		if !isZero(model[off:end]) {
			if _, err := d.WriteAt(model[off:end], int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func readWholeDisk(t *testing.T, d Disk) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCopyRawToDynamicAndBack(t *testing.T) {
	dir := t.TempDir()
	const size = 40<<20 + 3*512
	model := patternOf(size)
	src := filepath.Join(dir, "src.raw")
	rawFrom(t, src, model)

	in, err := OpenRaw(src, true)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	vhd := filepath.Join(dir, "out.vhd")
	out, err := Create(vhd, CreateOptions{Type: TypeDynamic, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	var calls, last int64
	st, err := Copy(context.Background(), out, in, CopyOptions{DstZeroed: true, Progress: func(done, total int64) {
		if done < last || total != size {
			t.Errorf("progress went %d -> %d of %d", last, done, total)
		}
		calls++
		last = done
	}})
	if err != nil {
		t.Fatal(err)
	}
	if last != size || calls == 0 {
		t.Errorf("progress ended at %d after %d calls, want %d", last, calls, size)
	}
	if st.Written+st.Zeroed != size || st.Written >= size/2 {
		t.Errorf("stats %+v: written+zeroed should be the size, mostly zeroed", st)
	}
	// Blocks holding only zeros (2 MiB each) are not allocated: only
	// 0, 1, 3, 4, 8, 15, 19 and 20 hold data.
	if got, want := out.AllocatedBytes(), int64(8*DefaultBlockSize); got != want {
		t.Errorf("dynamic output allocates %d bytes, want %d", got, want)
	}
	if !bytes.Equal(readWholeDisk(t, out), model) {
		t.Fatal("dynamic copy differs from the source")
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, vhd)

	// Back to raw, onto a file full of garbage: holes must be zeroed.
	img, err := Open(vhd, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	back := filepath.Join(dir, "back.raw")
	os.WriteFile(back, bytes.Repeat([]byte{0x5a}, size), 0o644)
	dst, err := OpenRaw(back, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(context.Background(), dst, img, CopyOptions{ChunkSize: 64 << 10, Buffers: 2}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readWholeDisk(t, dst), model) {
		t.Fatal("raw copy over garbage differs from the source")
	}
	dst.Close()
}

func TestCopyToLargerDisk(t *testing.T) {
	dir := t.TempDir()
	model := patternOf(8 << 20)
	src := filepath.Join(dir, "src.raw")
	rawFrom(t, src, model)
	in, _ := OpenRaw(src, true)
	defer in.Close()
	big := filepath.Join(dir, "big.raw")
	os.WriteFile(big, bytes.Repeat([]byte{0x5a}, 9<<20), 0o644)
	dst, _ := OpenRaw(big, false)
	defer dst.Close()
	if _, err := Copy(context.Background(), dst, in, CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	got := readWholeDisk(t, dst)
	if !bytes.Equal(got[:8<<20], model) || !isZero(got[8<<20:]) {
		t.Fatal("copy onto a larger disk: data differs or the tail is not zeroed")
	}
	small, _ := CreateRaw(filepath.Join(dir, "small.raw"), 1<<20)
	defer small.Close()
	if _, err := Copy(context.Background(), small, in, CopyOptions{}); err == nil {
		t.Fatal("copy onto a smaller disk succeeded")
	}
}

// failingDisk fails reads at or past failAt.
type failingDisk struct {
	Disk
	failAt int64
}

var errInjected = errors.New("injected read failure")

func (f *failingDisk) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.failAt {
		return 0, errInjected
	}
	return f.Disk.ReadAt(p, off)
}

func TestCopyStopsOnErrorAndCancel(t *testing.T) {
	dir := t.TempDir()
	size := int64(64 << 20)
	model := make([]byte, size)
	for i := range model {
		model[i] = byte(i/4096 + 1)
	}
	src := filepath.Join(dir, "src.raw")
	rawFrom(t, src, model)
	in, _ := OpenRaw(src, true)
	defer in.Close()
	dst, _ := CreateRaw(filepath.Join(dir, "dst.raw"), size)
	defer dst.Close()

	_, err := Copy(context.Background(), dst, &failingDisk{in, 40 << 20}, CopyOptions{})
	if !errors.Is(err, errInjected) {
		t.Fatalf("copy with a failing source: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	_, err = Copy(ctx, dst, in, CopyOptions{ChunkSize: 1 << 20, Progress: func(done, total int64) {
		if done >= 8<<20 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled copy: %v", err)
	}
}

func TestConvert(t *testing.T) {
	dir := t.TempDir()
	const size = 20<<20 + 1000 // odd: a VHD rounds it up to a sector
	model := patternOf(size)
	src := filepath.Join(dir, "src.raw")
	rawFrom(t, src, model)
	ctx := context.Background()

	fixed := filepath.Join(dir, "fixed.vhd")
	res, err := Convert(ctx, src, fixed, ConvertOptions{To: FormatFixed, Align: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.SrcSize != size || res.Size != 21<<20 || res.Source != "raw image" {
		t.Errorf("fixed: %+v", res)
	}
	checkClean(t, fixed)

	dyn := filepath.Join(dir, "dyn.vhd")
	if res, err = Convert(ctx, fixed, dyn, ConvertOptions{To: FormatDynamic, BlockSize: 512 << 10}); err != nil {
		t.Fatal(err)
	}
	if res.Source != "fixed VHD" || res.Size != 21<<20 {
		t.Errorf("dynamic: %+v", res)
	}
	checkClean(t, dyn)

	back := filepath.Join(dir, "back.raw")
	if _, err = Convert(ctx, dyn, back, ConvertOptions{To: FormatRaw}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(back)
	if len(got) != 21<<20 || !bytes.Equal(got[:size], model) || !isZero(got[size:]) {
		t.Fatal("raw -> fixed -> dynamic -> raw changed the data")
	}
	if st, _ := os.Stat(back); st.Mode().Perm() != 0o644 {
		t.Errorf("new image has mode %v, want 0644", st.Mode().Perm())
	}

	// An existing destination is refused, then replaced with Force.
	if _, err := Convert(ctx, src, back, ConvertOptions{To: FormatRaw}); !errors.Is(err, ErrDestinationExists) {
		t.Fatalf("existing destination: %v", err)
	}
	if res, err = Convert(ctx, src, back, ConvertOptions{To: FormatRaw, Force: true}); err != nil || !res.Replaced {
		t.Fatalf("forced: %+v, %v", res, err)
	}
	if got, _ := os.ReadFile(back); !bytes.Equal(got, model) {
		t.Fatal("forced convert: data differs")
	}
	if _, err := Convert(ctx, back, back, ConvertOptions{To: FormatRaw, Force: true}); err == nil || !strings.Contains(err.Error(), "same file") {
		t.Fatalf("convert onto itself: %v", err)
	}

	// A cancelled convert leaves nothing behind, and the old file intact.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Convert(cctx, src, dyn, ConvertOptions{To: FormatDynamic, Force: true}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled convert: %v", err)
	}
	checkClean(t, dyn)
	if _, err := Convert(cctx, src, filepath.Join(dir, "new.vhd"), ConvertOptions{To: FormatDynamic}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled convert: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := "back.raw dyn.vhd fixed.vhd src.raw"; strings.Join(names, " ") != want {
		t.Errorf("folder holds %v, want %s", names, want)
	}
}

func TestConvertRefusesDifferencing(t *testing.T) {
	dir := t.TempDir()
	child := filepath.Join(dir, "child.vhd")
	img, err := Create(child, CreateOptions{Type: TypeDifferencing, Size: 1 << 20, Parent: &ParentInfo{UUID: NewUUID(), Name: "parent.vhd", Locators: []LocatorPath{{LocatorW2ru, `.\parent.vhd`}}}})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	_, err = Convert(context.Background(), child, filepath.Join(dir, "out.raw"), ConvertOptions{To: FormatRaw})
	if !errors.Is(err, ErrUnsupportedImage) {
		t.Fatalf("convert of a differencing image: %v", err)
	}
}
