package backup

import (
	"sync"
	"testing"

	"vhdkit/engine"
	"vhdkit/engine/crashfile"
)

// TestCheckpointsDoNotConvoy: 32 workers complete 64 KiB pieces at once
// while checkpoints flush a real image; a checkpoint is due every 1 MiB,
// so 8 MiB of pieces need about 8 of them. The old completed() let every
// worker that found the queue due wait behind the running checkpoint and
// then run its own, of a few pieces each: 13 and 28 checkpoints here in
// two runs of the old code.
func TestCheckpointsDoNotConvoy(t *testing.T) {
	old := checkpointBytes
	checkpointBytes = 1 << 20
	defer func() { checkpointBytes = old }()
	const pieceSize, workers, each = 64 << 10, 32, 4
	imgF := crashfile.New()
	dest, err := engine.CreateFile(imgF, "dest", engine.CreateOptions{Type: engine.TypeDynamic, Size: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	logF := crashfile.New()
	log, err := createState(logF, stateHeader{Size: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := &copier{dest: dest, log: log}
	data := make([]byte, pieceSize)
	data[0] = 1
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				off := int64(w*each+i) * pieceSize
				if _, err := dest.WriteAt(data, off); err != nil {
					t.Error(err)
					return
				}
				if err := c.completed(record{piece{off, pieceSize}, 0}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := c.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if len(log.done) != workers*each {
		t.Fatalf("%d pieces logged, want %d", len(log.done), workers*each)
	}
	checkpoints := logF.Syncs() - 1 // the header's
	if want := workers * each * pieceSize / int(checkpointBytes); checkpoints > want+2 {
		t.Errorf("%d checkpoints for %d pieces of %d bytes (one due every %d bytes: want about %d)", checkpoints, workers*each, pieceSize, checkpointBytes, want)
	}
	t.Logf("%d checkpoints", checkpoints)
	if err := dest.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := engine.Check(imgF.Reopen(), engine.CheckOptions{Bitmaps: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %v", err, rep)
	}
}
