package crashfile_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"syscall"
	"testing"

	"vhdkit/engine"
	"vhdkit/engine/crashfile"
)

var _ engine.File = (*crashfile.File)(nil)

func fill(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }

func mustWrite(t *testing.T, f *crashfile.File, p []byte, off int64) {
	t.Helper()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

func contents(t *testing.T, f *crashfile.File) []byte {
	t.Helper()
	size, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

func TestReadsSeeUnsynced(t *testing.T) {
	f := crashfile.New()
	mustWrite(t, f, fill(1, 1000), 100)
	if got := contents(t, f); len(got) != 1100 || got[99] != 0 || got[100] != 1 || got[1099] != 1 {
		t.Fatalf("contents after write: len %d", len(got))
	}
	if f.Pending() != 1 || len(f.Durable()) != 0 {
		t.Fatalf("pending %d, durable %d bytes", f.Pending(), len(f.Durable()))
	}
	if err := f.PunchHole(200, 100); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(600); err != nil {
		t.Fatal(err)
	}
	want := append(append(append(make([]byte, 100), fill(1, 100)...), make([]byte, 100)...), fill(1, 300)...)
	if got := contents(t, f); !bytes.Equal(got, want) {
		t.Fatalf("contents after punch and truncate differ")
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Durable(), want) || f.Pending() != 0 {
		t.Fatalf("sync did not make the log durable")
	}
	if !bytes.Equal(contents(t, f.Crash(rand.New(rand.NewPCG(1, 1)))), want) {
		t.Fatalf("crash after sync lost data")
	}
}

// TestCrashOutcomes checks that every crash lands on durable data plus
// some of each write's sectors, and that over many crashes every kind of
// outcome shows up: nothing kept, everything kept, a torn write, and two
// overlapping writes persisted in the opposite order.
func TestCrashOutcomes(t *testing.T) {
	f := crashfile.New()
	mustWrite(t, f, fill(0xaa, 4*crashfile.SectorSize), 0)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, fill(1, 4*crashfile.SectorSize), 0) // older
	mustWrite(t, f, fill(2, 2*crashfile.SectorSize), 0) // newer, overlapping
	mustWrite(t, f, fill(3, crashfile.SectorSize), 6*crashfile.SectorSize)

	rng := rand.New(rand.NewPCG(7, 7))
	var nothing, all, torn, reordered, sizeOnly bool
	for range 2000 {
		got := contents(t, f.Crash(rng))
		if len(got) != 4*crashfile.SectorSize && len(got) != 7*crashfile.SectorSize {
			t.Fatalf("crashed size %d", len(got))
		}
		secs := make([]byte, len(got)/crashfile.SectorSize)
		for i := range secs {
			s := got[i*crashfile.SectorSize : (i+1)*crashfile.SectorSize]
			if !bytes.Equal(s, fill(s[0], len(s))) {
				t.Fatalf("sector %d is not one write's", i)
			}
			secs[i] = s[0]
		}
		for i, v := range secs {
			ok := v == 0xaa || v == 1 || (v == 2 && i < 2)
			if i >= 4 {
				ok = v == 0 || (v == 3 && i == 6)
			}
			if !ok {
				t.Fatalf("sector %d holds %#x, which no write put there", i, v)
			}
		}
		nothing = nothing || bytes.Equal(secs, []byte{0xaa, 0xaa, 0xaa, 0xaa})
		all = all || bytes.Equal(secs, []byte{2, 2, 1, 1, 0, 0, 3})
		torn = torn || (secs[2] == 1) != (secs[3] == 1)
		reordered = reordered || secs[0] == 1 && secs[2] == 1 // newer lost or applied first
		sizeOnly = sizeOnly || len(secs) == 7 && secs[6] == 0
	}
	if !nothing || !all || !torn || !reordered || !sizeOnly {
		t.Errorf("outcomes seen: nothing kept %v, all kept %v, torn %v, reordered %v, size only %v", nothing, all, torn, reordered, sizeOnly)
	}
	if f.Pending() != 3 {
		t.Errorf("Crash changed the file: %d pending", f.Pending())
	}
	if got := contents(t, f.CrashKeepAll()); !bytes.Equal(got, contents(t, f)) {
		t.Errorf("CrashKeepAll lost data")
	}
}

func TestSyncHooksAndFailure(t *testing.T) {
	f := crashfile.New()
	var before, after []int
	f.BeforeSync = func(n int) error {
		before = append(before, n)
		if n == 2 {
			return syscall.EIO
		}
		return nil
	}
	f.AfterSync = func(n int) { after = append(after, n) }
	mustWrite(t, f, fill(1, 512), 0)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, fill(2, 512), 0)
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("sync 2: %v, want EIO", err)
	}
	// Linux after a writeback error: the page reads new, the medium
	// holds old, and a later sync does not fix that.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := contents(t, f); got[0] != 2 {
		t.Fatalf("read %d after failed sync, want 2", got[0])
	}
	if d := f.Durable(); d[0] != 1 {
		t.Fatalf("durable %d after failed sync, want 1", d[0])
	}
	if len(before) != 3 || len(after) != 2 || after[1] != 3 || f.Syncs() != 3 {
		t.Fatalf("hooks saw before %v after %v, syncs %d", before, after, f.Syncs())
	}
}

func TestWriteFailure(t *testing.T) {
	f := crashfile.New()
	f.BeforeWrite = func(n int, off int64, size int) error {
		if n == 2 {
			return syscall.ENOSPC
		}
		return nil
	}
	mustWrite(t, f, fill(1, 512), 0)
	if _, err := f.WriteAt(fill(2, 512), 512); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write 2: %v, want ENOSPC", err)
	}
	if size, _ := f.Size(); size != 512 || f.Writes() != 2 || f.Pending() != 1 {
		t.Fatalf("after failed write: size %d, writes %d, pending %d", size, f.Writes(), f.Pending())
	}
}

func TestPunchErrAndClose(t *testing.T) {
	f := crashfile.FromBytes(fill(1, 1024))
	f.PunchErr = engine.ErrUnsupported
	if err := f.PunchHole(0, 512); !errors.Is(err, engine.ErrUnsupported) {
		t.Fatalf("punch: %v", err)
	}
	g := f.Reopen()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, crashfile.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if got := contents(t, g); !bytes.Equal(got, fill(1, 1024)) {
		t.Fatalf("reopened handle reads wrong data")
	}
	snap := g.Snapshot()
	mustWrite(t, g, fill(2, 512), 0)
	if got := contents(t, snap); got[0] != 1 {
		t.Fatalf("snapshot changed with its origin")
	}
}
