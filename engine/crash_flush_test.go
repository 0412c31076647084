package engine

// Exact interleavings and injected I/O errors around Flush: each test
// stops the engine at one point with a crashfile hook, does there what a
// concurrent caller could do, and then checks what a power failure would
// leave.

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
	"time"

	"vhdkit/engine/crashfile"
)

func newTestImage(t *testing.T, typ DiskType, size, blockSize int64) (*crashfile.File, *Image) {
	t.Helper()
	f := crashfile.New()
	img, err := CreateFile(f, t.Name(), CreateOptions{Type: typ, Size: size, BlockSize: blockSize, UUID: UUID{2}, Time: time.Unix(1e9, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return f, img
}

func pattern(c byte, n int) []byte {
	p := bytes.Repeat([]byte{c}, n)
	p[0] = c ^ 0xff // not a run, so a stale copy cannot pass by chance
	return p
}

// afterPowerLoss is the disk a power failure leaves if nothing unsynced
// reached the medium, after the repair a crash may call for.
func afterPowerLoss(t *testing.T, f *crashfile.File) (*crashfile.File, []byte) {
	t.Helper()
	c := crashfile.FromBytes(f.Durable())
	if rep, err := Check(c, CheckOptions{Bitmaps: true}); err != nil || !rep.OK() {
		if _, err := RepairFile(c, "crashed", RepairOptions{Bitmaps: true}); err != nil {
			t.Fatalf("repair after power loss: %v", err)
		}
	}
	img, err := OpenFile(c.Reopen(), "crashed", Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open after power loss: %v", err)
	}
	defer img.Close()
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	return c, got
}

// TestFlushRacingWrite: a Flush that runs while a write is in the file's
// WriteAt must not make a later Flush skip the sync that write needs. A
// write into a block already full (or any write to a fixed image) sets
// no metadata, so only the "data written" flag tells the next Flush.
func TestFlushRacingWrite(t *testing.T) {
	for _, typ := range []DiskType{TypeFixed, TypeDynamic} {
		t.Run(typ.String(), func(t *testing.T) {
			const bs = 64 << 10
			f, img := newTestImage(t, typ, 4*bs, bs)
			if _, err := img.WriteAt(pattern(1, bs), 0); err != nil { // block 0 full
				t.Fatal(err)
			}
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			armed := true
			f.BeforeWrite = func(n int, off int64, size int) error {
				if armed {
					armed = false
					// Another caller's Flush runs to completion while
					// this write is on its way to the file.
					done := make(chan error)
					go func() { done <- img.Flush() }()
					if err := <-done; err != nil {
						t.Errorf("concurrent flush: %v", err)
					}
				}
				return nil
			}
			p := pattern(2, 4*SectorSize)
			if _, err := img.WriteAt(p, 8*SectorSize); err != nil {
				t.Fatal(err)
			}
			// The write has returned: this Flush must make it durable.
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			_, got := afterPowerLoss(t, f)
			if !bytes.Equal(got[8*SectorSize:12*SectorSize], p) {
				t.Fatalf("a write acknowledged before Flush returned was lost in a power failure")
			}
		})
	}
}

// TestConcurrentFlushes: a Flush that finds nothing dirty because
// another Flush took the work must still wait for that one's sync.
func TestConcurrentFlushes(t *testing.T) {
	for _, typ := range []DiskType{TypeFixed, TypeDynamic} {
		t.Run(typ.String(), func(t *testing.T) {
			const bs = 64 << 10
			f, img := newTestImage(t, typ, 4*bs, bs)
			if _, err := img.WriteAt(pattern(1, bs), 0); err != nil {
				t.Fatal(err)
			}
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			p := pattern(2, SectorSize)
			if _, err := img.WriteAt(p, 0); err != nil {
				t.Fatal(err)
			}
			inSync, release := make(chan struct{}), make(chan struct{})
			f.BeforeSync = func(n int) error {
				if inSync != nil {
					close(inSync)
					inSync = nil
					<-release
				}
				return nil
			}
			first := make(chan error)
			wait := inSync
			go func() { first <- img.Flush() }()
			<-wait // the first flush is in its sync
			second := make(chan error)
			go func() { second <- img.Flush() }()
			select {
			case err := <-second:
				// It returned while the sync that covers the write is
				// still under way: a power failure now loses the write.
				_, got := afterPowerLoss(t, f)
				if err == nil && !bytes.Equal(got[:SectorSize], p) {
					t.Errorf("a second Flush returned before the first one's sync, with the write not durable")
				}
				close(release)
			case <-time.After(100 * time.Millisecond):
				close(release) // it waits, as it should
				if err := <-second; err != nil {
					t.Fatal(err)
				}
			}
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			img.Close()
		})
	}
}

// TestFlushFailureSticks: after a Sync fails, the OS may have dropped
// the unsynced data while still showing it to reads, and a second Sync
// succeeds without writing it (Linux after a writeback error). So a
// Flush after a failed Flush must fail too, not report the lost writes
// durable.
func TestFlushFailureSticks(t *testing.T) {
	for _, typ := range []DiskType{TypeFixed, TypeDynamic} {
		t.Run(typ.String(), func(t *testing.T) {
			const bs = 64 << 10
			f, img := newTestImage(t, typ, 4*bs, bs)
			f.BeforeSync = func(n int) error {
				if n == 2 { // the first sync after create
					return syscall.EIO
				}
				return nil
			}
			p := pattern(3, 2*SectorSize)
			if _, err := img.WriteAt(p, bs); err != nil {
				t.Fatal(err)
			}
			if err := img.Flush(); !errors.Is(err, syscall.EIO) {
				t.Fatalf("flush: %v, want EIO", err)
			}
			if err := img.Flush(); err == nil {
				_, got := afterPowerLoss(t, f)
				if !bytes.Equal(got[bs:bs+2*SectorSize], p) {
					t.Fatalf("Flush succeeded after a failed Flush, but the write it covers is not durable")
				}
			}
			if _, err := img.WriteAt(p, 0); err == nil {
				if err := img.Flush(); err == nil {
					t.Fatalf("write and flush succeed after a failed sync")
				}
			}
			img.Close()
		})
	}
}

// TestBitmapEvictedDuringFlush: a flush takes the dirty bitmaps, syncs,
// then writes them. If the bitmap cache drops one of them in between (it
// no longer looks dirty), the next write to that block reads the old
// bitmap back from the file, and the next flush writes it over the one
// this flush wrote: the bits of the first write are lost.
func TestBitmapEvictedDuringFlush(t *testing.T) {
	defer func(old int64) { maxCachedBitmapBytes = old }(maxCachedBitmapBytes)
	maxCachedBitmapBytes = SectorSize // one bitmap: every load evicts the rest
	const bs = 4096
	f, img := newTestImage(t, TypeDynamic, 16*bs, bs)
	if _, err := img.WriteAt(pattern(4, SectorSize), bs); err != nil { // block 1 allocated
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	first := pattern(5, SectorSize)
	if _, err := img.WriteAt(first, 0); err != nil { // block 0, sector 0
		t.Fatal(err)
	}
	second := pattern(6, SectorSize)
	f.BeforeSync = func(n int) error {
		if second == nil {
			return nil
		}
		// Between the flush's first sync and its bitmap writes: a reader
		// loads block 1's bitmap (evicting block 0's), then a writer
		// writes block 0 again.
		if _, err := img.Extents(bs, bs); err != nil {
			t.Error(err)
		}
		if _, err := img.WriteAt(second, SectorSize); err != nil {
			t.Error(err)
		}
		second = nil
		return nil
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(f.Reopen(), CheckOptions{Bitmaps: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		t.Errorf("check after flush: %s", p)
	}
}

// TestCloseAfterDeallocatingLastBlock: deallocating the blocks at the end
// of the file leaves their space behind while the image is open; a clean
// Close must not leave it for Check to report.
func TestCloseAfterDeallocatingLastBlock(t *testing.T) {
	const bs = 64 << 10
	f, img := newTestImage(t, TypeDynamic, 8*bs, bs)
	for b := range int64(3) {
		if _, err := img.WriteAt(pattern(byte(b+1), SectorSize), b*bs); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := img.Zero(bs, 2*bs, ZeroMayDeallocate); err != nil { // blocks 1 and 2
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if err := checkClosed(f.Reopen(), false); err != nil {
		t.Fatal(err)
	}
	_, got := afterPowerLoss(t, f)
	if !bytes.Equal(got[:SectorSize], pattern(1, SectorSize)) || !isZero(got[SectorSize:]) {
		t.Fatal("wrong contents after close")
	}
}

// TestCrashLeavesGuestFooterAtEnd: a new block's last sector is written
// before the footer that follows it is durable. If the guest wrote a VHD
// footer there (a VHD stored inside the disk) and power fails with that
// sector on disk but not the footer, the file ends in the guest's
// footer. The image must still open as itself, from the copy at 0.
func TestCrashLeavesGuestFooterAtEnd(t *testing.T) {
	const bs = 64 << 10
	for _, guest := range []DiskType{TypeFixed, TypeDynamic} {
		t.Run(guest.String(), func(t *testing.T) {
			f, img := newTestImage(t, TypeDynamic, 8*bs, bs)
			gf := newFooter(CreateOptions{Type: guest, Size: 4096})
			raw := gf.Marshal()
			if _, err := img.WriteAt(raw[:], bs-SectorSize); err != nil { // the last sector of block 0
				t.Fatal(err)
			}
			// The crash keeps the data write and loses the new footer.
			end := img.sparse.dataOff(img.sparse.entry(0)) + bs
			b := f.Durable()
			b = append(b, make([]byte, end-int64(len(b)))...)
			copy(b[end-SectorSize:], raw[:])
			c := crashfile.FromBytes(b)
			got, err := OpenFile(c.Reopen(), "crashed", Options{ReadOnly: true})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if got.Type() != TypeDynamic || got.Size() != 8*bs || !got.FooterFromCopy() {
				t.Fatalf("crashed image opens as a %s disk of %d bytes (footer from copy %v); it is a dynamic disk of %d", got.Type(), got.Size(), got.FooterFromCopy(), 8*bs)
			}
			got.Close()
			if _, err := RepairFile(c, "crashed", RepairOptions{Bitmaps: true}); err != nil {
				t.Fatal(err)
			}
			if err := checkClosed(c, false); err != nil {
				t.Fatal(err)
			}
		})
	}
}
