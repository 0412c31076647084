package backup

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/nbdserve"
)

// A live chain backed up the way vhd backup does it (begin: snapshot
// under a marker name, view of the frozen layer, changes since the
// newest marker; pull over NBD), here in one process: the service tests
// do the same through vhd serve.

const diskSize = 32 << 20

// liveDisk is a served chain and a model of what it holds.
type liveDisk struct {
	t     *testing.T
	dir   string
	c     *chains.Chain
	model []byte
	rng   *rand.Rand
}

func newLiveDisk(t *testing.T) *liveDisk {
	t.Helper()
	dir := t.TempDir()
	base := filepath.Join(dir, "disk.vhd")
	img, err := engine.Create(base, engine.CreateOptions{Type: engine.TypeDynamic, Size: diskSize})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	c, err := chains.Open(base, chains.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &liveDisk{t: t, dir: dir, c: c, model: make([]byte, diskSize), rng: rand.New(rand.NewPCG(7, 7))}
	t.Cleanup(func() { d.close() })
	return d
}

// write puts n writes of random data (some of zeros) at random places.
func (d *liveDisk) write(n int) {
	d.t.Helper()
	for range n {
		l := int64(512 * (1 + d.rng.IntN(256)))
		off := d.rng.Int64N(diskSize-l) &^ 511
		b := make([]byte, l)
		if d.rng.IntN(5) > 0 {
			for i := range b {
				b[i] = byte(d.rng.Uint32())
			}
		}
		if _, err := d.c.WriteAt(b, off); err != nil {
			d.t.Fatal(err)
		}
		copy(d.model[off:], b)
	}
}

// begin cuts a point as vhd backup begin does and returns what to serve:
// the view (a ChangedView when an earlier point is marked) and its
// identity.
func (d *liveDisk) begin() (engine.Disk, Identity, []byte) {
	d.t.Helper()
	top := d.c.Layers()[0]
	point := top.Image.Footer().UUID
	since, err := FindSince(d.c.Layers(), engine.UUID{})
	if err != nil {
		d.t.Fatal(err)
	}
	if err := d.c.Snapshot(MarkerPath(top.Path, point)); err != nil {
		d.t.Fatal(err)
	}
	v, err := d.c.View(top.Path)
	if err != nil {
		d.t.Fatal(err)
	}
	id := Identity{Point: point, Since: since.Point}
	if since.Layers > 0 {
		return NewChangedView(v, since.Layers), id, bytes.Clone(d.model)
	}
	return v, id, bytes.Clone(d.model)
}

func (d *liveDisk) close() {
	if d.c == nil {
		return
	}
	layers := d.c.Layers()
	if err := d.c.Close(); err != nil {
		d.t.Error(err)
	}
	d.c = nil
	for _, l := range layers {
		checkClean(d.t, l.Path)
	}
}

func checkClean(t *testing.T, path string) {
	t.Helper()
	r, err := engine.CheckPath(path, engine.CheckOptions{})
	if err != nil || !r.OK() {
		t.Errorf("vhd check %s: %v %v", path, err, r)
	}
}

// serve exports disk over NBD with id's description until the test ends;
// the disk is closed then.
func serve(t *testing.T, disk engine.Disk, id Identity) string {
	t.Helper()
	srv := &nbdserve.Server{Exports: map[string]*nbdserve.Export{"b": {Name: "b", Description: id.Description(), Disk: disk}}}
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		<-done
		disk.Close()
	})
	return "nbd+unix:///b?socket=" + sock
}

// readChain reads a backup with its chain.
func readChain(t *testing.T, path string) []byte {
	t.Helper()
	c, err := chains.Open(path, chains.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, c.Size())
	if _, err := c.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func pullT(t *testing.T, uri, dest, since string) *PullResult {
	t.Helper()
	res, err := Pull(context.Background(), PullOptions{URI: uri, Dest: dest, Since: since, Connections: 3})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, dest)
	for _, left := range []string{dest + ".part", dest + ".part.state"} {
		if _, err := os.Stat(left); err == nil {
			t.Errorf("%s left behind", left)
		}
	}
	return res
}

// TestFullAndIncremental: a full backup of a point, writes, an
// incremental of the next point over it: each backup reads as the disk
// did at its point, the incremental holds only what changed, and it is
// an ordinary differencing image of the full one.
func TestFullAndIncremental(t *testing.T) {
	d := newLiveDisk(t)
	d.write(40)
	disk0, id0, at0 := d.begin()
	if id0.HasSince() {
		t.Fatal("the first point lists changes since an earlier one")
	}
	out := t.TempDir()
	full := filepath.Join(out, "full.vhd")
	res0 := pullT(t, serve(t, disk0, id0), full, "")
	if got := readChain(t, full); !bytes.Equal(got, at0) {
		t.Fatal("the full backup does not read as the disk at its point")
	}
	if res0.UUID != BackupUUID(id0.Point).String() || res0.Point != id0.Point.String() {
		t.Errorf("full: uuid %s point %s", res0.UUID, res0.Point)
	}
	d.write(40) // after the point: in the marker layer, not in backup 0

	const changes = 6
	for range changes {
		off := d.rng.Int64N(diskSize-8192) &^ 511
		d.c.WriteAt(bytes.Repeat([]byte{0xab}, 8192), off)
		copy(d.model[off:], bytes.Repeat([]byte{0xab}, 8192))
	}
	disk1, id1, at1 := d.begin()
	if id1.Since != id0.Point {
		t.Fatalf("the second point lists changes since %s, want %s", id1.Since, id0.Point)
	}
	incr := filepath.Join(out, "incr.vhd")
	res1 := pullT(t, serve(t, disk1, id1), incr, full)
	if got := readChain(t, incr); !bytes.Equal(got, at1) {
		t.Fatal("the incremental with its base does not read as the disk at its point")
	}
	if got := readChain(t, full); !bytes.Equal(got, at0) {
		t.Fatal("the full backup changed")
	}
	changed := changedBytes(t, d, disk1.(*ChangedView))
	if res1.Planned != changed {
		t.Errorf("incremental planned %d bytes, the layers since the point hold %d", res1.Planned, changed)
	}
	if res1.Written+res1.Zeroed != res1.Planned || res1.Planned >= res0.Planned {
		t.Errorf("incremental wrote %d+%d of %d planned (full: %d)", res1.Written, res1.Zeroed, res1.Planned, res0.Planned)
	}
	t.Logf("full: %d bytes planned, %d written; incremental: %d planned, %d written, %d zeroed", res0.Planned, res0.Written, res1.Planned, res1.Written, res1.Zeroed)
}

// changedBytes is what ChangedExtents lists over the whole disk.
func changedBytes(t *testing.T, d *liveDisk, v *ChangedView) int64 {
	t.Helper()
	runs, err := v.ChangedExtents(0, diskSize)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, r := range runs {
		n += r.Len
	}
	return n
}

// TestIncrementalRefusesWrongBase: a --since that is not the backup of
// the point the export lists changes since is refused, and writes
// nothing.
func TestIncrementalRefusesWrongBase(t *testing.T) {
	d := newLiveDisk(t)
	d.write(10)
	disk0, id0, _ := d.begin()
	out := t.TempDir()
	full := filepath.Join(out, "full.vhd")
	pullT(t, serve(t, disk0, id0), full, "")
	d.write(10)
	d.begin() // a point never pulled
	d.write(10)
	disk2, id2, _ := d.begin()
	uri := serve(t, disk2, id2)
	_, err := Pull(context.Background(), PullOptions{URI: uri, Dest: filepath.Join(out, "incr.vhd"), Since: full})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("is not the backup of point")) {
		t.Fatalf("pull over the wrong base: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(out, "incr*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestResumeAfterCancel: a pull stopped half-way leaves DEST.part and its
// log, not DEST; the rerun copies only what the log does not hold and
// the backup reads as the point.
func TestResumeAfterCancel(t *testing.T) {
	d := newLiveDisk(t)
	d.write(200)
	disk, id, at := d.begin()
	uri := serve(t, disk, id)
	dest := filepath.Join(t.TempDir(), "full.vhd")
	ctx, cancel := context.WithCancel(context.Background())
	stopAt := int64(0)
	_, err := Pull(ctx, PullOptions{URI: uri, Dest: dest, Connections: 1, Progress: func(done, total int64) {
		if stopAt == 0 {
			stopAt = total / 2
		}
		if done >= stopAt {
			cancel()
		}
	}})
	if err == nil {
		t.Fatal("a cancelled pull succeeded")
	}
	if _, err := os.Stat(dest); err == nil {
		t.Fatal("DEST exists after an interrupted pull")
	}
	var notes []string
	res, err := Pull(context.Background(), PullOptions{URI: uri, Dest: dest, Notify: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed == 0 || res.Read >= res.Planned || len(notes) == 0 {
		t.Errorf("rerun: resumed %d, read %d of %d; notes %q", res.Resumed, res.Read, res.Planned, notes)
	}
	checkClean(t, dest)
	if !bytes.Equal(readChain(t, dest), at) {
		t.Fatal("the resumed backup does not read as the point")
	}
}
