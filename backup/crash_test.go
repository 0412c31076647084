package backup

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"vhdkit/engine"
	"vhdkit/engine/crashfile"
	"vhdkit/nbdclient"
)

var errPowerCut = errors.New("power cut")

// TestPullSurvivesPowerLoss cuts the power at every sync of a pull (the
// backup image's and the state log's, counted together), three times
// each with different outcomes of the unsynced writes: the state log
// read back must name only pieces the repaired image holds exactly (the
// checkpoint order), and a resumed pull must finish a backup that reads
// as the source.
func TestPullSurvivesPowerLoss(t *testing.T) {
	old := checkpointBytes
	checkpointBytes = 128 << 10
	defer func() { checkpointBytes = old }()
	const size = 8 << 20
	src, model := sourceImage(t, size)
	uri := serve(t, src, Identity{Point: engine.UUID{1}})
	plan, err := planCopy(context.Background(), dialB(t, uri), false)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	crashes := 0
	for k := 1; ; k++ {
		cut := false
		for range 3 {
			img, log, ok := pullCut(t, dialB(t, uri), plan, size, k, rng)
			if !ok {
				break
			}
			cut = true
			crashes++
			checkLogged(t, img, log, k)
			c := &copier{conns: []*nbdclient.Conn{dialB(t, uri)}, dest: img, log: log}
			if err := c.run(context.Background(), plan); err != nil {
				t.Fatalf("resume after the cut at sync %d: %v", k, err)
			}
			if err := verify(context.Background(), img, log, plan); err != nil {
				t.Fatalf("after the cut at sync %d: %v", k, err)
			}
			got := make([]byte, size)
			img.ReadAt(got, 0)
			if !bytes.Equal(got, model) {
				t.Fatalf("after the cut at sync %d and a resume, the backup differs from the source", k)
			}
			img.Close()
		}
		if !cut {
			break
		}
	}
	if crashes < 20 {
		t.Fatalf("only %d power cuts: the pull synced too rarely for the test to mean much", crashes)
	}
	t.Logf("%d power cuts survived", crashes)
}

// dialB connects to the source; a run that is cut closes its connection.
func dialB(t *testing.T, uri string) *nbdclient.Conn {
	t.Helper()
	conn, err := nbdclient.Dial(context.Background(), uri, nbdclient.Options{MetaContexts: []string{ctxAllocation}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// sourceImage serves as the source: a dynamic image with data in a
// third of its blocks.
func sourceImage(t *testing.T, size int64) (*engine.Image, []byte) {
	t.Helper()
	img, err := engine.Create(filepath.Join(t.TempDir(), "src.vhd"), engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(5, 5))
	for off := int64(0); off < size; off += 256 << 10 {
		if rng.IntN(3) != 0 {
			continue
		}
		b := make([]byte, 64<<10+rng.IntN(128<<10))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		img.WriteAt(b, off)
		copy(model[off:], b)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	return img, model
}

// pullCut runs a pull into simulated files and cuts the power at the
// kth sync; it returns what the files hold after the cut (the image
// repaired), or false if the pull synced fewer than k times.
func pullCut(t *testing.T, conn *nbdclient.Conn, plan []piece, size int64, k int, rng *rand.Rand) (*engine.Image, *stateLog, bool) {
	t.Helper()
	imgF, logF := crashfile.New(), crashfile.New()
	dest, err := engine.CreateFile(imgF, "dest", engine.CreateOptions{Type: engine.TypeDynamic, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	head := stateHeader{Size: size, Point: engine.UUID{1}}
	log, err := createState(logF, head)
	if err != nil {
		t.Fatal(err)
	}
	var syncs atomic.Int64
	var once sync.Once
	var imgC, logC *crashfile.File
	hook := func(int) error {
		if syncs.Add(1) != int64(k) {
			return nil
		}
		once.Do(func() { imgC, logC = imgF.Crash(rng), logF.Crash(rng) })
		return errPowerCut
	}
	imgF.BeforeSync, logF.BeforeSync = hook, hook
	c := &copier{conns: []*nbdclient.Conn{conn}, dest: dest, log: log}
	err = c.run(context.Background(), plan)
	dest.Close()
	if imgC == nil {
		if err != nil {
			t.Fatalf("a pull with no power cut: %v", err)
		}
		return nil, nil, false
	}
	if rep, err := engine.Check(imgC, engine.CheckOptions{}); err != nil || !rep.OK() {
		if _, err := engine.RepairFile(imgC, "crashed", engine.RepairOptions{}); err != nil {
			t.Fatalf("repair after the cut at sync %d: %v", k, err)
		}
	}
	img, err := engine.OpenFile(imgC.Reopen(), "crashed", engine.Options{})
	if err != nil {
		t.Fatalf("open after the cut at sync %d: %v", k, err)
	}
	relog, err := openState(logC)
	if errors.Is(err, errNoHeader) {
		relog, err = createState(logC, head) // cut before the header was synced
	}
	if err != nil {
		t.Fatalf("state log after the cut at sync %d: %v", k, err)
	}
	if relog.head != head {
		t.Fatalf("state header after the cut at sync %d: %+v", k, relog.head)
	}
	return img, relog, true
}

// checkLogged: every piece the log names reads back with its CRC.
func checkLogged(t *testing.T, img *engine.Image, log *stateLog, k int) {
	t.Helper()
	for p, want := range log.done {
		b := make([]byte, p.n)
		img.ReadAt(b, p.off)
		if crc32.Checksum(b, castagnoli) != want {
			t.Fatalf("after the cut at sync %d the log names the piece at %d, which the image does not hold", k, p.off)
		}
	}
}
