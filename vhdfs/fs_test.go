package vhdfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"vhdkit/chains"
	"vhdkit/engine"
)

// needFUSE skips a test on a machine that cannot mount FUSE at all.
func needFUSE(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("this machine cannot mount FUSE filesystems: %v", err)
	}
	f.Close()
	if os.Getuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			t.Skip("not root and no fusermount3: cannot mount FUSE (scripts/setup.sh installs fuse3)")
		}
	}
}

// newImage creates a dynamic image of size bytes and returns its path.
func newImage(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.vhd")
	img, err := engine.Create(path, engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkImage ends every test that wrote an image: vhd check, bitmaps
// included, finds nothing.
func checkImage(t *testing.T, path string) {
	t.Helper()
	rep, err := engine.CheckPath(path, engine.CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("check %s: %+v", path, rep)
	}
}

// mounted opens path (read-only if ro) as a chain, mounts it and returns
// the mount point. Cleanup unmounts, waits and closes.
// openMountedDisk makes a fresh image of size bytes, opens it, mounts
// it and opens the mount's disk file for reading and writing. The caller
// closes it (closing flushes, before any check the test runs).
func openMountedDisk(t *testing.T, size int64) (path string, c *chains.Chain, disk *os.File) {
	t.Helper()
	path = newImage(t, size)
	c = openChain(t, path, false)
	mnt, _ := mounted(t, c, Options{})
	f, err := os.OpenFile(filepath.Join(mnt, "disk"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	return path, c, f
}

func mounted(t *testing.T, disk engine.Disk, opts Options) (string, *Server) {
	t.Helper()
	return mountedAt(t, disk, opts, t.TempDir())
}

// mountedAt is mounted at a mount point of the caller's choosing.
func mountedAt(t *testing.T, disk engine.Disk, opts Options, mnt string) (string, *Server) {
	t.Helper()
	needFUSE(t)
	srv, err := Mount(context.Background(), disk, mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unmountRetry(srv); err != nil {
			t.Errorf("unmount: %v", err)
		}
		if err := srv.Wait(); err != nil {
			t.Errorf("wait: %v", err)
		}
		disk.Close()
	})
	return mnt, srv
}

func unmountRetry(srv *Server) error {
	var err error
	for range 50 {
		if err = srv.Unmount(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

func openChain(t *testing.T, path string, ro bool) *chains.Chain {
	t.Helper()
	c, err := chains.Open(path, chains.Options{ReadOnly: ro})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>9)
	}
	return b
}

func TestDiskFileReadWriteFsync(t *testing.T) {
	path, c, f := openMountedDisk(t, 64<<20)
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size() != 64<<20 {
		t.Fatalf("size %d", fi.Size())
	}
	// Unaligned, crossing a 2 MiB block, larger than one request.
	want := pattern(3<<20+777, 1)
	if _, err := f.WriteAt(want, 1<<20+13); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// Durable: the engine, read directly, has the data.
	got := make([]byte, len(want))
	if _, err := c.ReadAt(got, 1<<20+13); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("disk after fsync differs (%v)", err)
	}
	clear(got)
	if _, err := f.ReadAt(got, 1<<20+13); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back differs (%v)", err)
	}
	// The end: short read, then EOF; a write past it has nowhere to go.
	buf := make([]byte, 8192)
	if n, err := f.ReadAt(buf, 64<<20-4096); n != 4096 || err != io.EOF {
		t.Fatalf("read at end: %d %v", n, err)
	}
	if _, err := f.WriteAt(buf, 64<<20); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write past end: %v", err)
	}
	if err := f.Truncate(1 << 20); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("truncate: %v", err)
	}

	// O_DIRECT with an aligned buffer.
	fd, err := unix.Open(f.Name(), unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("O_DIRECT open: %v", err)
	}
	defer unix.Close(fd)
	al := aligned(1 << 20)
	copy(al, pattern(1<<20, 9))
	if _, err := unix.Pwrite(fd, al, 8<<20); err != nil {
		t.Fatalf("O_DIRECT write: %v", err)
	}
	rb := aligned(1 << 20)
	if _, err := unix.Pread(fd, rb, 8<<20); err != nil || !bytes.Equal(rb, al) {
		t.Fatalf("O_DIRECT read: %v", err)
	}
	if err := unix.Fdatasync(fd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkImage(t, path) })
}

func aligned(n int) []byte {
	b := make([]byte, n+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&b[0]))%4096)
	return b[off : off+n : off+n]
}

func TestSeekHoleEmpty1TiB(t *testing.T) {
	path := newImage(t, 1<<40)
	c := openChain(t, path, false)
	mnt, _ := mounted(t, c, Options{})
	fd, err := unix.Open(filepath.Join(mnt, "disk"), unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	start := time.Now()
	if off, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err != nil || off != 0 {
		t.Fatalf("SEEK_HOLE 0: %d %v", off, err)
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_DATA); err != syscall.ENXIO {
		t.Fatalf("SEEK_DATA on an empty disk: %v, want ENXIO", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("SEEK on an empty 1 TiB disk took %v", d)
	}
	t.Logf("SEEK_HOLE + SEEK_DATA on an empty 1 TiB disk: %v", time.Since(start))
	// One 4 KiB write in the middle is the only data.
	if _, err := unix.Pwrite(fd, pattern(4096, 3), 512<<30); err != nil {
		t.Fatal(err)
	}
	if off, err := unix.Seek(fd, 0, unix.SEEK_DATA); err != nil || off != 512<<30 {
		t.Fatalf("SEEK_DATA: %d %v", off, err)
	}
	if off, err := unix.Seek(fd, 512<<30, unix.SEEK_HOLE); err != nil || off != 512<<30+4096 {
		t.Fatalf("SEEK_HOLE: %d %v", off, err)
	}
	if _, err := unix.Seek(fd, 512<<30+4096, unix.SEEK_DATA); err != syscall.ENXIO {
		t.Fatalf("SEEK_DATA after the data: %v", err)
	}
	var st unix.Stat_t
	time.Sleep(1100 * time.Millisecond) // the attribute cache
	if err := unix.Fstat(fd, &st); err != nil || st.Blocks*512 < 4096 || st.Blocks*512 > 2<<20 {
		t.Fatalf("st_blocks %d (%v)", st.Blocks, err)
	}
	t.Cleanup(func() { checkImage(t, path) })
}

func TestFallocate(t *testing.T) {
	path, _, f := openMountedDisk(t, 16<<20)
	defer f.Close()
	fd := int(f.Fd())
	if _, err := f.WriteAt(pattern(8<<20, 5), 0); err != nil {
		t.Fatal(err)
	}
	// Punch the whole second 2 MiB block (freed) and part of the third.
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 2<<20, 2<<20+4096); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 6<<20, 8192); err != nil && err != unix.EOPNOTSUPP {
		t.Fatalf("ZERO_RANGE: %v", err)
	}
	got := make([]byte, 8<<20)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := pattern(8<<20, 5)
	clear(want[2<<20 : 4<<20+4096])
	clear(want[6<<20 : 6<<20+8192])
	if !bytes.Equal(got, want) {
		t.Fatal("contents after fallocate differ")
	}
	if off, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err != nil || off != 2<<20 {
		t.Fatalf("SEEK_HOLE after punch: %d %v", off, err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_COLLAPSE_RANGE, 0, 4096); err == nil {
		t.Fatal("COLLAPSE_RANGE succeeded")
	}
	t.Cleanup(func() { checkImage(t, path) })
}

func TestPartitionsAppearAfterSfdisk(t *testing.T) {
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Fatal("sfdisk missing: run scripts/setup.sh")
	}
	path := newImage(t, 64<<20)
	c := openChain(t, path, false)
	mnt, srv := mounted(t, c, Options{FSDirs: true})
	if names := ls(t, mnt); !slices.Equal(names, []string{"disk", "fs", "info.json"}) {
		t.Fatalf("empty disk: %v", names)
	}
	if names := ls(t, filepath.Join(mnt, "fs")); !slices.Equal(names, []string{"disk"}) {
		t.Fatalf("fs/ of an empty disk: %v", names)
	}
	dev := filepath.Join(mnt, "disk")
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", dev)
	cmd.Stdin = strings.NewReader(strings.ReplaceAll("label: dos\nD1 : size=8M, type=83\nD2 : size=16M, type=5\nD5 : size=4M, type=83\nD6 : size=4M, type=7\n", "D", dev))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk through the mount: %v\n%s", err, out)
	}
	if names := ls(t, mnt); !slices.Equal(names, []string{"disk", "fs", "info.json", "p1", "p5", "p6"}) {
		t.Fatalf("after sfdisk: %v (%+v)", names, srv.Table())
	}
	// The extended container (p2) is not a partition file.
	p5, _ := srv.root.part(5)
	fi, err := os.Stat(filepath.Join(mnt, "p5"))
	if err != nil || fi.Size() != 4<<20 {
		t.Fatalf("p5: %v %v", fi, err)
	}
	// A write through p5 lands at its start on the disk and stops at its end.
	f, err := os.OpenFile(filepath.Join(mnt, "p5"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := pattern(8192, 7)
	if _, err := f.WriteAt(want, 4<<20-4096); err == nil {
		t.Fatal("a write past the end of p5 succeeded")
	}
	if _, err := f.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := make([]byte, 8192)
	d, _ := os.Open(filepath.Join(mnt, "disk"))
	d.ReadAt(got, p5.Start)
	d.Close()
	if !bytes.Equal(got, want) {
		t.Fatal("p5 write not at the partition's start")
	}
	var info struct {
		Size  int64
		Mode  string
		Table struct {
			Kind       string
			Partitions []Partition
		} `json:"partition_table"`
	}
	b, err := os.ReadFile(filepath.Join(mnt, "info.json"))
	if err != nil || json.Unmarshal(b, &info) != nil || info.Table.Kind != "mbr" || len(info.Table.Partitions) != 3 || info.Size != 64<<20 {
		t.Fatalf("info.json: %v\n%s", err, b)
	}
	if names := ls(t, filepath.Join(mnt, "fs")); !slices.Equal(names, []string{"p1", "p5", "p6"}) {
		t.Fatalf("fs/: %v", names)
	}
	t.Cleanup(func() { checkImage(t, path) })
}

func ls(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func sha(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	path := newImage(t, 16<<20)
	before := sha(t, path)
	for _, tc := range []struct {
		name string
		ro   bool
	}{{"read-only disk", true}, {"read-only mount", false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := openChain(t, path, tc.ro)
			mnt, srv := mounted(t, c, Options{ReadOnly: true})
			if _, err := os.OpenFile(filepath.Join(mnt, "disk"), os.O_RDWR, 0); !errors.Is(err, syscall.EROFS) {
				t.Fatalf("open for writing: %v", err)
			}
			if _, err := os.ReadFile(filepath.Join(mnt, "disk")); err != nil {
				t.Fatal(err)
			}
			unmountRetry(srv)
			srv.Wait()
		})
	}
	if !bytes.Equal(before, sha(t, path)) {
		t.Fatal("a read-only mount changed the image")
	}
}

// panicky panics on a read at one offset: a bug in a handler.
type panicky struct{ engine.Disk }

func (p panicky) ReadAt(b []byte, off int64) (int, error) {
	if off == 1<<20 {
		panic("boom")
	}
	return p.Disk.ReadAt(b, off)
}

func TestPanicBecomesEIO(t *testing.T) {
	path := newImage(t, 16<<20)
	mnt, _ := mounted(t, panicky{openChain(t, path, true)}, Options{})
	f, err := os.Open(filepath.Join(mnt, "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 4096), 1<<20); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read into a panic: %v, want EIO", err)
	}
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatalf("the mount died with the panic: %v", err)
	}
}
