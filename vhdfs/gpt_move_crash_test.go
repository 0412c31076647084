package vhdfs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
	"vhdkit/engine/crashfile"
)

var errPowerLost = errors.New("power lost")

// shrinkGPT is what vhd resize --to-minimum does to a GPT disk, once
// chains.Resize has opened it: plan, move the backup, shrink.
func shrinkGPT(img *engine.Image) (*GPTShrink, error) {
	p, err := PlanGPTShrink(img)
	if err != nil {
		return nil, err
	}
	if err := p.MoveBackup(img); err != nil {
		return nil, err
	}
	if p.Minimal {
		return p, nil
	}
	return p, img.Resize(p.NewSize, true)
}

// gptCrashDisk is a GPT disk (sfdisk) whose partitions hold random bytes.
func gptCrashDisk(t *testing.T) (raw []byte, parts []Partition) {
	raw = sfdiskImage(t, 8<<20, "label: gpt\nstart=2048, size=4096, type=linux\nstart=8192, size=2047, type=linux\n")
	tab, err := ReadTable(bytes.NewReader(raw), int64(len(raw)))
	if err != nil || len(tab.Problems) > 0 || len(tab.Partitions) != 2 {
		t.Fatalf("the test disk's table: %+v, %v", tab, err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for _, p := range tab.Partitions {
		for i := p.Start; i < p.Start+p.Len; i++ {
			raw[i] = byte(rng.Uint32())
		}
	}
	return raw, tab.Partitions
}

// vhdHolding makes an image of typ holding raw on a crashfile, synced,
// and returns the file's bytes. Runs of zeros are not written, so a
// dynamic image leaves them unallocated.
func vhdHolding(t *testing.T, typ engine.DiskType, raw []byte) []byte {
	f := crashfile.New()
	img, err := engine.CreateFile(f, "gpt.vhd", engine.CreateOptions{Type: typ, Size: int64(len(raw)), BlockSize: 512 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 64 << 10
	for off := 0; off < len(raw); off += chunk {
		if b := raw[off : off+chunk]; !isZeroBytes(b) {
			if _, err := img.WriteAt(b, int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Durable()
}

// TestGPTShrinkPowerLoss cuts the power before each write and each sync
// of a GPT shrink (the backup's move and the engine's resize), three
// random crashes each, on a fixed and a dynamic image. Every crashed
// image must pass Check (after Repair, for what it calls fixable), hold
// a GPT whose primary and backup are whole and agree, that our parser
// and sgdisk accept, with every partition's bytes; and shrinking it
// again must finish the job.
func TestGPTShrinkPowerLoss(t *testing.T) {
	raw, parts := gptCrashDisk(t)
	for _, typ := range []engine.DiskType{engine.TypeFixed, engine.TypeDynamic} {
		t.Run(typ.String(), func(t *testing.T) {
			base := vhdHolding(t, typ, raw)
			points := 0
			for k := 1; ; k++ {
				crashed := 0
				for variant := range 3 {
					if shrinkCrashingAt(t, base, k, rand.New(rand.NewPCG(uint64(k), uint64(variant))), raw, parts) {
						crashed++
					}
				}
				if crashed == 0 {
					break
				}
				points = k
			}
			if points < 8 {
				t.Fatalf("the shrink wrote and synced only %d times", points)
			}
			t.Logf("power cut before each of %d writes and syncs, 3 ways each", points)
		})
	}
}

// shrinkCrashingAt shrinks the image in base, cutting the power before
// its kth write or sync; it reports whether the cut came, and checks
// what the crash left.
func shrinkCrashingAt(t *testing.T, base []byte, k int, rng *rand.Rand, raw []byte, parts []Partition) bool {
	t.Helper()
	f := crashfile.FromBytes(base)
	var crashed *crashfile.File
	n := 0
	cut := func() error {
		if n++; n == k {
			crashed = f.Crash(rng)
			return errPowerLost
		}
		return nil
	}
	f.BeforeWrite = func(int, int64, int) error { return cut() }
	f.BeforeSync = func(int) error { return cut() }
	img, err := engine.OpenFile(f, "gpt.vhd", engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := shrinkGPT(img)
	img.Close()
	if crashed == nil {
		if err != nil {
			t.Fatalf("shrink without a crash: %v", err)
		}
		f.BeforeWrite, f.BeforeSync = nil, nil
		checkShrunk(t, f, p.NewSize, raw, parts, "the shrink")
		return false
	}
	if !errors.Is(err, errPowerLost) {
		t.Fatalf("event %d: the shrink went on after the power was lost: %v", k, err)
	}
	repaired := repairCrashed(t, crashed, k)
	disk := diskBytes(t, repaired)
	checkGPTPair(t, disk, raw, parts, k)
	img, err = engine.OpenFile(repaired.Reopen(), "gpt.vhd", engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err = shrinkGPT(img)
	img.Close()
	if err != nil {
		t.Fatalf("event %d: shrink again after the crash: %v", k, err)
	}
	checkShrunk(t, repaired, p.NewSize, raw, parts, "the shrink run again after a crash")
	return true
}

// repairCrashed checks the crashed image, repairs what Check calls
// fixable, and checks again: it must be clean.
func repairCrashed(t *testing.T, f *crashfile.File, k int) *crashfile.File {
	t.Helper()
	rep, err := engine.Check(f.Reopen(), engine.CheckOptions{})
	if err != nil {
		t.Fatalf("event %d: check the crashed image: %v", k, err)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			if !p.Fixable {
				t.Fatalf("event %d: the crash left an unfixable problem: %+v", k, p)
			}
		}
		if _, err := engine.RepairFile(f.Reopen(), "gpt.vhd", engine.RepairOptions{}); err != nil {
			t.Fatalf("event %d: repair: %v", k, err)
		}
	}
	checkCrashImage(t, f)
	return f
}

func checkCrashImage(t *testing.T, f *crashfile.File) {
	t.Helper()
	rep, err := engine.Check(f.Reopen(), engine.CheckOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %+v, %v", rep, err)
	}
}

// diskBytes reads the whole virtual disk of the image in f.
func diskBytes(t *testing.T, f *crashfile.File) []byte {
	t.Helper()
	img, err := engine.OpenFile(f.Reopen(), "gpt.vhd", engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// checkGPTPair checks the disk a crash left: the primary header and the
// backup it names are whole and agree, ReadTable sees the partitions
// with no problem, their bytes are kept, and sgdisk finds no problem but
// (before the shrink) the backup's not being at the end.
func checkGPTPair(t *testing.T, disk, raw []byte, parts []Partition, k int) {
	t.Helper()
	size := int64(len(disk))
	tab, err := ReadTable(bytes.NewReader(disk), size)
	if err != nil || len(tab.Problems) > 0 || !samePartitions(tab.Partitions, parts) {
		t.Fatalf("event %d: after the crash the table reads %+v, %v", k, tab, err)
	}
	sr := sectorReader{r: bytes.NewReader(disk), size: size}
	prim, err := ParseGPTHeader(disk[sectorSize:2*sectorSize], size)
	if err != nil {
		t.Fatalf("event %d: primary header: %v", k, err)
	}
	arr := disk[prim.EntriesLBA*sectorSize:][:prim.ArrayLen()]
	if _, err := readBackupGPT(sr, prim, arr); err != nil {
		t.Fatalf("event %d: the backup the primary names: %v", k, err)
	}
	for _, p := range parts {
		if !bytes.Equal(disk[p.Start:p.Start+p.Len], raw[p.Start:p.Start+p.Len]) {
			t.Fatalf("event %d: partition %d's bytes changed", k, p.Number)
		}
	}
	atEnd := prim.AlternateLBA == uint64(size/sectorSize)-1
	sgdiskVerify(t, disk, atEnd)
}

// checkShrunk checks a finished shrink: the image is clean, has the new
// size, and holds a table sgdisk finds no fault with, and the data.
func checkShrunk(t *testing.T, f *crashfile.File, newSize int64, raw []byte, parts []Partition, what string) {
	t.Helper()
	checkCrashImage(t, f)
	disk := diskBytes(t, f)
	if int64(len(disk)) != newSize {
		t.Fatalf("%s: the disk is %d bytes, want %d", what, len(disk), newSize)
	}
	checkGPTPair(t, disk, raw, parts, 0)
	if !sgdiskVerify(t, disk, true) {
		t.Fatalf("%s: sgdisk -v found problems", what)
	}
}

// sgdiskVerify runs sgdisk -v on disk. With atEnd, it must find no
// problem; else exactly the one of the backup's place (a move that
// stopped before the disk shrank). It reports whether sgdisk found none.
func sgdiskVerify(t *testing.T, disk []byte, atEnd bool) bool {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(path, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sgdisk", "-v", path).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk -v (gdisk: scripts/setup.sh installs it): %v\n%s", err, out)
	}
	s := string(out)
	clean := strings.Contains(s, "No problems found")
	if !clean && (atEnd || !strings.Contains(s, "Identified 1 problems") || !strings.Contains(s, "doesn't reside\nat the end of the disk")) {
		t.Fatalf("sgdisk -v:\n%s", s)
	}
	return clean
}

func samePartitions(a, b []Partition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
