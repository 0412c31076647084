package chains

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
)

// What the writers of the live kill test (live_kill_test.go) write, made
// reproducible so that the parent process can tell every version of every
// sector apart after a kill without being told the data.
//
// Writer w owns the 64 KiB granules g with g%killWriters == w. Its n-th
// operation (n from 1, its sequence number) is drawn from a generator
// seeded with (seed, w): 4 to 16 KiB at a 4 KiB boundary inside one of its
// granules, one in ten a Zero, every killFlushEvery-th followed by a
// Flush. Each 512-byte sector of a write holds a header naming the
// writer, the sequence number and the sector, then filler derived from
// the three: a sector read back names the write it came from, or is
// garbage. Sequence number 0 is the base image's content: data in half
// of each writer's granules, nothing in the others.
const (
	killWriters    = 4
	killChunk      = 4 << 10 // the unit of writes and of the model
	killGranule    = 1 << dirtyShift
	killFlushEvery = 16
	sectorSize     = 512
)

var killMagic = []byte("VHDKLIVE")

// killOp is one operation of a writer.
type killOp struct {
	off, n int64
	zero   bool
	flush  bool // a Flush follows it
}

// killPlan draws a writer's operations in order.
type killPlan struct {
	rng      *rand.Rand
	w        int
	granules int64 // granules the writer owns
	seq      uint64
}

func newKillPlan(size int64, w int, seed uint64) *killPlan {
	all := size / killGranule
	return &killPlan{rng: rand.New(rand.NewPCG(seed, uint64(w))), w: w, granules: (all - int64(w) + killWriters - 1) / killWriters}
}

// next returns the writer's next operation.
func (p *killPlan) next() killOp {
	p.seq++
	g := int64(p.w) + killWriters*p.rng.Int64N(p.granules)
	first := p.rng.Int64N(killGranule / killChunk)
	n := 1 + p.rng.Int64N(min(4, killGranule/killChunk-first))
	return killOp{
		off:   g*killGranule + first*killChunk,
		n:     n * killChunk,
		zero:  p.rng.IntN(10) == 0,
		flush: p.seq%killFlushEvery == 0,
	}
}

// killOwner is the writer that owns the byte at off.
func killOwner(off int64) int { return int(off / killGranule % killWriters) }

// baseHolds says whether the base image holds data (version 0) at off.
func baseHolds(off int64) bool { return off/killGranule/killWriters%2 == 0 }

// fillVersion fills p, which starts at disk offset off, with version seq
// of writer w.
func fillVersion(p []byte, w int, seq uint64, off int64) {
	for s := 0; s+sectorSize <= len(p); s += sectorSize {
		fillSector(p[s:s+sectorSize], w, seq, off/sectorSize+int64(s/sectorSize))
	}
}

func fillSector(p []byte, w int, seq uint64, sector int64) {
	copy(p, killMagic)
	binary.LittleEndian.PutUint32(p[8:], uint32(w))
	binary.LittleEndian.PutUint64(p[12:], seq)
	binary.LittleEndian.PutUint64(p[20:], uint64(sector))
	binary.LittleEndian.PutUint32(p[28:], 0)
	x := seq*0x9E3779B97F4A7C15 ^ uint64(sector)<<24 ^ uint64(w+1)
	for i := 32; i < sectorSize; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(p[i:], x)
	}
}

// sectorVersion is what a sector read back holds: a version of a writer
// (ok), zeros (zero), or neither (garbage).
type sectorVersion struct {
	w        int
	seq      uint64
	zero, ok bool
}

// readSector decodes the sector at index sector from p (512 bytes).
func readSector(p []byte, sector int64) sectorVersion {
	if isZero(p) {
		return sectorVersion{zero: true}
	}
	if !bytes.Equal(p[:8], killMagic) {
		return sectorVersion{}
	}
	w := int(binary.LittleEndian.Uint32(p[8:]))
	seq := binary.LittleEndian.Uint64(p[12:])
	if int64(binary.LittleEndian.Uint64(p[20:])) != sector || w < 0 || w >= killWriters {
		return sectorVersion{}
	}
	want := make([]byte, sectorSize)
	fillSector(want, w, seq, sector)
	return sectorVersion{w: w, seq: seq, ok: bytes.Equal(p, want)}
}
