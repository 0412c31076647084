package backup

import (
	"context"
	"fmt"

	"vhdkit/nbdclient"
)

// The plan of a pull: the pieces of the export to copy, found from block
// status before anything is copied. A full backup copies what
// base:allocation says is neither a hole nor zeros; an incremental what
// vhdkit:changed marks CHANGED. Each piece lies inside one aligned block
// of at most 2 MiB (the VHD block the backup allocates for it), so a
// piece is one READ and lands in one block.

// piece is one range to copy.
type piece struct{ off, n int64 }

const (
	// maxPiece is the largest piece, and the block pieces align to.
	maxPiece = 2 << 20
	// joinGap: in a full backup, runs of data closer than this inside
	// one block are copied as one piece (the zeros between come as hole
	// chunks and are not written).
	joinGap = 64 << 10
	// maxRunsPerBlock bounds the pieces of one block, and so the plan's
	// memory (16 bytes a piece, at most 8 per 2 MiB of disk): a block
	// with more is copied as one piece from its first run to its last.
	maxRunsPerBlock = 8
)

// Context names.
const (
	ctxAllocation = "base:allocation"
	ctxChanged    = "vhdkit:changed"
)

// planCopy lists the pieces to copy from c: with changed, the extents
// vhdkit:changed marks; otherwise the data base:allocation shows, or
// the whole export when the server has no block status.
func planCopy(ctx context.Context, c *nbdclient.Conn, changed bool) ([]piece, error) {
	info := c.Info()
	block := pieceBlock(info.MaxBlock)
	name, want := ctxAllocation, func(f uint32) bool { return f&nbdclient.StateZero == 0 }
	if changed {
		name, want = ctxChanged, func(f uint32) bool { return f&1 != 0 }
	}
	if _, ok := info.Contexts[name]; !ok {
		if changed {
			return nil, fmt.Errorf("the server lists no changed blocks (no %s context): it is not a vhdkit backup export with an earlier point", ctxChanged)
		}
		return splitRuns([][2]int64{{0, info.Size}}, block, 0), nil
	}
	runs, err := statusRuns(ctx, c, name, want)
	if err != nil {
		return nil, err
	}
	gap := int64(joinGap)
	if changed {
		gap = 0 // what lies between changed runs must not be written
	}
	return splitRuns(runs, block, gap), nil
}

// pieceBlock is the block pieces align to: 2 MiB, or the largest power
// of two the server takes in one READ.
func pieceBlock(maxBlock uint32) int64 {
	b := int64(maxPiece)
	for b > 4096 && b > int64(maxBlock) {
		b /= 2
	}
	return b
}

// statusRuns walks the export's block status in the named context and
// returns the runs whose flags want picks, joined.
func statusRuns(ctx context.Context, c *nbdclient.Conn, name string, want func(uint32) bool) ([][2]int64, error) {
	size := c.Info().Size
	var runs [][2]int64
	for off := int64(0); off < size; {
		st, err := c.BlockStatus(ctx, off, uint32(min(size-off, nbdclient.MaxStatusLength)))
		if err != nil {
			return nil, fmt.Errorf("block status at %d: %w", off, err)
		}
		for _, e := range st[name] {
			if want(e.Flags) {
				if k := len(runs); k > 0 && runs[k-1][1] == off {
					runs[k-1][1] += e.Len
				} else {
					runs = append(runs, [2]int64{off, off + e.Len})
				}
			}
			off += e.Len
		}
	}
	return runs, nil
}

// splitRuns cuts runs at block boundaries into pieces, joining runs of
// one block closer than gap, and all of a block's runs when it has more
// than maxRunsPerBlock.
func splitRuns(runs [][2]int64, block, gap int64) []piece {
	var out []piece
	first := 0 // the first piece of the current block
	for _, r := range runs {
		for off := r[0]; off < r[1]; {
			end := min(r[1], (off/block+1)*block)
			k := len(out)
			switch {
			case k > 0 && out[k-1].off/block == off/block && off-(out[k-1].off+out[k-1].n) < max(gap, 1):
				out[k-1].n = end - out[k-1].off
			default:
				if k == 0 || out[k-1].off/block != off/block {
					first = k
				}
				out = append(out, piece{off, end - off})
				if len(out)-first > maxRunsPerBlock {
					out[first].n = end - out[first].off
					out = out[:first+1]
				}
			}
			off = end
		}
	}
	return out
}

// total is the bytes the pieces cover.
func total(ps []piece) int64 {
	var n int64
	for _, p := range ps {
		n += p.n
	}
	return n
}
