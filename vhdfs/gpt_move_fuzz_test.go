package vhdfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"vhdkit/engine"
)

// memDisk is a disk in memory whose every byte is data.
type memDisk struct{ b []byte }

func (m *memDisk) Size() int64 { return int64(len(m.b)) }

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m.b)) || int64(len(p)) > int64(len(m.b))-off {
		return 0, fmt.Errorf("write at %d+%d: %w", off, len(p), engine.ErrOutOfRange)
	}
	return copy(m.b[off:], p), nil
}

func (m *memDisk) Flush() error { return nil }

func (m *memDisk) Extents(off, n int64) ([]engine.Extent, error) {
	return []engine.Extent{{Off: off, Len: n, State: engine.ExtentData}}, nil
}

// FuzzGPTShrink plans and moves the backup GPT of arbitrary disks. It
// must not panic; a refusal writes nothing (a move's only for data past
// the last partition); a move writes nothing before
// the last partition's end but sectors 0 and 1, leaves only zeros past
// the new size, and leaves a disk that, cut there, reads the same
// partitions with no problem and is minimal.
func FuzzGPTShrink(f *testing.F) {
	// Small disks: the fuzzer minimises what it finds byte by byte.
	const small = "label: gpt\nunit: sectors\nfirst-lba: 34\nstart=34, size=10, name=alpha\nstart=48, size=4\n"
	if _, err := exec.LookPath("sfdisk"); err == nil {
		f.Add(sfdiskImage(f, 48<<10, small))
		f.Add(sfdiskImage(f, 24<<10, "label: gpt\nunit: sectors\nfirst-lba: 6\ntable-length: 12\nstart=30, size=8\nstart=6, size=10\n"))
		moved := sfdiskImage(f, 48<<10, small)
		if p, err := PlanGPTShrink(&memDisk{moved}); err == nil {
			p.MoveBackup(&memDisk{moved}) // a move the shrink did not follow
			f.Add(moved)
		}
	}
	f.Add(protectiveMBR(1))
	f.Fuzz(func(t *testing.T, disk []byte) {
		// The move writes: on a copy, as the fuzzer's input must not change.
		disk = slices.Clone(disk[:len(disk)/sectorSize*sectorSize])
		before := slices.Clone(disk)
		d := &memDisk{disk}
		p, err := PlanGPTShrink(d)
		if err != nil {
			if !bytes.Equal(disk, before) {
				t.Fatal("a refused plan wrote")
			}
			return
		}
		if err := p.MoveBackup(d); err != nil {
			if !errors.Is(err, engine.ErrShrinkData) || !bytes.Equal(disk, before) {
				t.Fatalf("a refused move wrote, or said %v", err)
			}
			return
		}
		if p.Minimal {
			if !bytes.Equal(disk, before) {
				t.Fatal("a minimal disk was written")
			}
			return
		}
		checkMoved(t, p, before, disk)
	})
}

// checkMoved checks a disk after MoveBackup against what it was.
func checkMoved(t *testing.T, p *GPTShrink, before, after []byte) {
	t.Helper()
	if p.NewSize > p.Size || p.PartEnd >= p.NewSize {
		t.Fatalf("plan %+v", p)
	}
	if !bytes.Equal(after[2*sectorSize:p.PartEnd], before[2*sectorSize:p.PartEnd]) {
		t.Fatal("the move wrote before the last partition's end")
	}
	if !isZeroBytes(after[p.NewSize:]) {
		t.Fatal("the part the shrink cuts off is not zeros")
	}
	old, err := ReadTable(bytes.NewReader(before), int64(len(before)))
	if err != nil {
		t.Fatal(err)
	}
	shrunk := after[:p.NewSize]
	tab, err := ReadTable(bytes.NewReader(shrunk), p.NewSize)
	if err != nil || len(tab.Problems) > 0 || !samePartitions(tab.Partitions, old.Partitions) {
		t.Fatalf("after the move the table reads %+v, %v; before %+v", tab, err, old)
	}
	again, err := PlanGPTShrink(&memDisk{shrunk})
	if err != nil || !again.Minimal {
		t.Fatalf("the shrunk disk plans again: %+v, %v", again, err)
	}
	if strings.Contains(fmt.Sprint(tab.Problems), "GPT") {
		t.Fatal(tab.Problems)
	}
}
