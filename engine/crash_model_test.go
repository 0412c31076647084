package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
)

// crashModel is what a disk must hold after a crash. At every successful
// Flush it records the contents (flushed); after that, each sector may
// also hold any value written to it since (since, as hashes), because
// the host may have persisted any of those writes, torn at sectors and
// in any order.
type crashModel struct {
	cur     []byte             // what reads must return now
	flushed []byte             // contents as of the last successful flush
	since   map[int64][]uint64 // sector -> hashes of values written since
	seed    maphash.Seed
}

func newCrashModel(size int64) *crashModel {
	return &crashModel{
		cur:     make([]byte, size),
		flushed: make([]byte, size),
		since:   map[int64][]uint64{},
		seed:    maphash.MakeSeed(),
	}
}

func (m *crashModel) sector(b []byte, s int64) []byte {
	end := min(int64(len(b)), (s+1)*SectorSize)
	return b[s*SectorSize : end]
}

// write records p written at off, before the write is issued: from then
// on a crash may show it.
func (m *crashModel) write(p []byte, off int64) {
	copy(m.cur[off:], p)
	m.admit(off, int64(len(p)))
}

// zero records [off, off+n) zeroed (Zero, Trim, deallocation).
func (m *crashModel) zero(off, n int64) {
	clear(m.cur[off : off+n])
	m.admit(off, n)
}

// admit adds the current value of every sector in [off, off+n) to what a
// crash may show: an unaligned write rewrites its whole edge sectors with
// what they hold now.
func (m *crashModel) admit(off, n int64) {
	if n == 0 {
		return
	}
	for s := off / SectorSize; s*SectorSize < off+n; s++ {
		h := maphash.Bytes(m.seed, m.sector(m.cur, s))
		if !bytes.Equal(m.sector(m.cur, s), m.sector(m.flushed, s)) && !containsHash(m.since[s], h) {
			m.since[s] = append(m.since[s], h)
		}
	}
}

func containsHash(list []uint64, h uint64) bool {
	for _, x := range list {
		if x == h {
			return true
		}
	}
	return false
}

// flush records a successful flush: everything written so far must
// survive every later crash.
func (m *crashModel) flush() {
	copy(m.flushed, m.cur)
	clear(m.since)
}

// checkCrashed reports the first sector of got that holds neither its
// last flushed value nor one written since.
func (m *crashModel) checkCrashed(got []byte) error {
	for s := int64(0); s*SectorSize < int64(len(got)); s++ {
		g := m.sector(got, s)
		if bytes.Equal(g, m.sector(m.flushed, s)) || containsHash(m.since[s], maphash.Bytes(m.seed, g)) {
			continue
		}
		return fmt.Errorf("sector %d (offset %#x) holds %s; flushed value %s, %d values written since, current %s",
			s, s*SectorSize, sectorDesc(g), sectorDesc(m.sector(m.flushed, s)), len(m.since[s]), sectorDesc(m.sector(m.cur, s)))
	}
	return nil
}

// checkCurrent reports the first difference between got, read at off,
// and what the disk must hold now.
func (m *crashModel) checkCurrent(got []byte, off int64) error {
	want := m.cur[off : off+int64(len(got))]
	if bytes.Equal(got, want) {
		return nil
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Errorf("read at %#x differs at offset %#x: got %#x, want %#x", off, off+int64(i), got[i], want[i])
		}
	}
	return nil
}

func sectorDesc(b []byte) string {
	if isZero(b) {
		return "zeros"
	}
	return fmt.Sprintf("% x...", b[:8])
}

// A workload is a list of operations on a disk, generated from a seed so
// that a process that ran it and one that checks its result agree on it.
type opKind uint8

const (
	opWrite opKind = iota
	opZero
	opTrim
	opFlush
	opReopen
	opRead
)

var opNames = [...]string{"write", "zero", "trim", "flush", "reopen", "read"}

type workOp struct {
	kind   opKind
	off, n int64
	mode   ZeroMode
	fill   uint8  // writes: 0 random bytes, 1 zeros, 2 random with zero sectors, 3 VHD footers
	seed   uint64 // writes: seeds the data
}

func (o workOp) String() string {
	s := fmt.Sprintf("%s %#x+%#x", opNames[o.kind], o.off, o.n)
	switch o.kind {
	case opZero:
		s += fmt.Sprintf(" mode %d", o.mode)
	case opWrite:
		s += fmt.Sprintf(" fill %d", o.fill)
	case opFlush, opReopen:
		s = opNames[o.kind]
	}
	return s
}

// data is the bytes a write op writes.
func (o workOp) data() []byte {
	p := make([]byte, o.n)
	if o.fill == 1 {
		return p
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], o.seed)
	c := rand.NewChaCha8(key)
	c.Read(p)
	r := rand.New(c)
	if o.fill == 2 {
		for s := 0; s < len(p); s += SectorSize {
			if r.IntN(2) == 0 {
				clear(p[s:min(len(p), s+SectorSize)])
			}
		}
	}
	if o.fill == 3 {
		// Every whole sector a valid VHD footer, as a VHD stored inside
		// the disk has: a crash that leaves the file ending in one must
		// not pass it for the image's own footer.
		for s := alignUp(o.off, SectorSize) - o.off; s+SectorSize <= int64(len(p)); s += SectorSize {
			typ := []DiskType{TypeFixed, TypeDynamic}[r.IntN(2)]
			f := newFooter(CreateOptions{Type: typ, Size: SectorSize * (1 + r.Int64N(1<<20)), UUID: UUID{1, byte(r.Uint32())}, Time: vhdEpoch})
			raw := f.Marshal()
			copy(p[s:], raw[:])
		}
	}
	return p
}

// workloadParams shape a generated workload.
type workloadParams struct {
	size      int64
	unit      int64 // block size; for fixed disks a unit for whole-range zeros
	maxWrite  int64
	flushRate int // one op in flushRate is a flush
	reopen    bool
}

func genWorkload(rng *rand.Rand, p workloadParams, n int) []workOp {
	ops := make([]workOp, 0, n)
	for len(ops) < n {
		var o workOp
		switch r := rng.IntN(100); {
		case r < 100/p.flushRate:
			o.kind = opFlush
		case p.reopen && r < 100/p.flushRate+3:
			o.kind = opReopen
		case r < 70:
			o.kind = opWrite
			o.off, o.n = randRange(rng, p)
			o.fill = [...]uint8{0, 0, 0, 1, 1, 2, 2, 3}[rng.IntN(8)]
			o.seed = rng.Uint64()
		case r < 80:
			o.kind = opZero
			o.off, o.n = zeroRange(rng, p)
			o.mode = ZeroMode(rng.IntN(2))
		case r < 90:
			o.kind = opTrim
			o.off, o.n = zeroRange(rng, p)
		default:
			o.kind = opRead
			o.off, o.n = randRange(rng, p)
		}
		ops = append(ops, o)
	}
	return ops
}

// randRange picks a range for a write: sub-sector, sector-aligned,
// unaligned, or straddling a block boundary.
func randRange(rng *rand.Rand, p workloadParams) (off, n int64) {
	switch rng.IntN(5) {
	case 0: // sub-sector
		off = rng.Int64N(p.size)
		n = 1 + rng.Int64N(SectorSize-1)
	case 1, 2: // whole sectors
		off = rng.Int64N(p.size/SectorSize) * SectorSize
		n = (1 + rng.Int64N(64)) * SectorSize
	case 3: // anything
		off = rng.Int64N(p.size)
		n = 1 + rng.Int64N(p.maxWrite)
	default: // across a block boundary
		b := rng.Int64N((p.size + p.unit - 1) / p.unit)
		off = max(0, b*p.unit-rng.Int64N(8)*SectorSize-rng.Int64N(2)*rng.Int64N(SectorSize))
		n = 1 + rng.Int64N(min(p.maxWrite, 2*p.unit))
	}
	return off, min(n, p.size-off)
}

// zeroRange picks a range to zero or trim: whole blocks half the time.
func zeroRange(rng *rand.Rand, p workloadParams) (off, n int64) {
	if rng.IntN(2) == 0 {
		return randRange(rng, p)
	}
	blocks := (p.size + p.unit - 1) / p.unit
	b := rng.Int64N(blocks)
	k := 1 + rng.Int64N(min(2, blocks-b))
	off = b * p.unit
	return off, min(k*p.unit, p.size-off)
}

// flushSectors records a flush by one of several writers that own
// separate sectors: only the sectors mine reports become flushed.
func (m *crashModel) flushSectors(mine func(s int64) bool) {
	for s := int64(0); s*SectorSize < int64(len(m.cur)); s++ {
		if mine(s) {
			copy(m.sector(m.flushed, s), m.sector(m.cur, s))
			delete(m.since, s)
		}
	}
}
