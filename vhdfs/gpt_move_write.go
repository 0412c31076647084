package vhdfs

import (
	"bytes"
	"fmt"

	"vhdkit/engine"
)

// MoveBackup moves the backup GPT to the end of the last partition and
// points the primary at it, so that d can then shrink to NewSize
// (engine.Image.Resize). Nothing happens for a Minimal plan. The plan
// must come from PlanGPTShrink on d, with nothing written since.
//
// First, writing nothing, it refuses a disk whose sectors past the last
// partition hold anything but zeros and the old backup table (see
// checkTail): the move would overwrite them, the shrink cut them off.
//
// The order keeps a valid GPT on the disk whatever a crash keeps of the
// writes (sectors are written whole or not at all; a Flush makes every
// earlier write durable):
//  1. The new backup array, then its header, go where nothing is yet:
//     past the last partition, before the old backup, sectors the
//     primary does not name and checkTail found zero (or holding these
//     very bytes, from a move cut short). Flush. A crash leaves the
//     primary and the old backup, which name none of it.
//  2. Sector 0 (the protective entry's new length, when it changes) and
//     the primary header naming the new backup. Flush. The primary is
//     one sector, so it names the old backup or the new, and both are
//     whole and agree with it. The protective entry's length is only a
//     hint tools warn about.
//  3. The old backup's array is zeroed, flushed, then its header, and
//     flushed: nothing names them any more, and the header goes last so
//     that a move cut short still recognises the array as its own
//     (findStaleBackup). Until the disk shrinks, sgdisk -v reports the
//     backup not at the disk's end, which running the resize again
//     finishes: it picks up after step 2. (It also zeroes the sector
//     after the new end if it holds the footer a fixed image's shrink
//     wrote there before a crash cut it short: the resize writes it
//     again.)
//
// Partition data is never written: every sector written lies past the
// last partition.
func (p *GPTShrink) MoveBackup(d GPTDisk) error {
	if p.Minimal {
		return nil
	}
	if err := p.checkTail(d); err != nil {
		return err
	}
	if !p.moved {
		if err := writeSectors(d, p.array, p.arrLBA); err != nil {
			return err
		}
		if err := writeSectors(d, p.backup[:], p.lastLBA); err != nil {
			return err
		}
		if err := flushGPT(d); err != nil {
			return err
		}
	}
	if p.pmbr != nil {
		if err := writeSectors(d, p.pmbr, 0); err != nil {
			return err
		}
	}
	if !p.moved {
		if err := writeSectors(d, p.primary[:], 1); err != nil {
			return err
		}
	}
	if err := flushGPT(d); err != nil {
		return err
	}
	return p.zeroStale(d)
}

// zeroStale zeroes the old backup's array, then its header (step 3),
// and the footer of a shrink cut short.
func (p *GPTShrink) zeroStale(d GPTDisk) error {
	if p.cutFooter {
		if err := writeSectors(d, make([]byte, sectorSize), p.lastLBA+1); err != nil {
			return err
		}
		if err := flushGPT(d); err != nil {
			return err
		}
	}
	if p.stale == nil {
		return nil
	}
	if err := writeSectors(d, make([]byte, p.stale.arrSectors*sectorSize), p.stale.arrLBA); err != nil {
		return err
	}
	if err := flushGPT(d); err != nil {
		return err
	}
	if err := writeSectors(d, make([]byte, sectorSize), p.stale.hdrLBA); err != nil {
		return err
	}
	return flushGPT(d)
}

func writeSectors(d GPTDisk, b []byte, lba uint64) error {
	if _, err := d.WriteAt(b, int64(lba)*sectorSize); err != nil {
		return fmt.Errorf("write the GPT at sector %d: %w", lba, err)
	}
	return nil
}

func flushGPT(d GPTDisk) error {
	if err := d.Flush(); err != nil {
		return fmt.Errorf("flush the GPT: %w", err)
	}
	return nil
}

// tailWindow bounds one Extents call of checkTail, and tailChunk one read.
const (
	tailWindow = 64 << 20
	tailChunk  = 1 << 20
)

// checkTail checks every sector from the new backup's start to the
// disk's end: each must read as zeros, belong to the old backup, or
// (the new backup's place) already hold what goes there. Anything else
// is data the shrink would overwrite or cut off.
func (p *GPTShrink) checkTail(d GPTDisk) error {
	buf := make([]byte, tailChunk)
	for off := int64(p.arrLBA) * sectorSize; off < p.Size; off += tailWindow {
		ext, err := d.Extents(off, min(p.Size-off, tailWindow))
		if err != nil {
			return err
		}
		for _, e := range ext {
			if e.State != engine.ExtentData {
				continue
			}
			for at := e.Off; at < e.Off+e.Len; at += tailChunk {
				b := buf[:min(tailChunk, e.Off+e.Len-at)]
				if _, err := d.ReadAt(b, at); err != nil {
					return fmt.Errorf("read past the last partition at byte %d: %w", at, err)
				}
				if err := p.checkSectors(b, uint64(at/sectorSize)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkSectors checks the sectors of b, the first being lba.
func (p *GPTShrink) checkSectors(b []byte, lba uint64) error {
	for i := 0; i < len(b); i, lba = i+sectorSize, lba+1 {
		s := b[i:min(i+sectorSize, len(b))]
		if p.stale.holds(lba) || isZeroBytes(s) || p.cutFooter && lba == p.lastLBA+1 {
			continue
		}
		if lba >= p.arrLBA && lba <= p.lastLBA && (p.moved || bytes.Equal(s, p.newBackupSector(lba))) {
			continue
		}
		return fmt.Errorf("%w: sector %d, past the last partition (which ends at sector %d), is not zero and not part of the GPT; nothing changed", engine.ErrShrinkData, lba, p.arrLBA-1)
	}
	return nil
}

// newBackupSector is what the new backup puts at lba, in its place.
func (p *GPTShrink) newBackupSector(lba uint64) []byte {
	if lba == p.lastLBA {
		return p.backup[:]
	}
	i := (lba - p.arrLBA) * sectorSize
	return p.array[i : i+sectorSize]
}

func isZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
