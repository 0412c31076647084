package vhdgen

import (
	"fmt"
	"math/rand/v2"
)

// Case is one test input: layers (top first) and an optional mutation.
type Case struct {
	Seed     uint64    `json:"seed"`
	Index    int       `json:"index"`
	Layers   []Layer   `json:"layers"`
	Mutation *Mutation `json:"mutation,omitempty"`
}

// Options tune Generate.
type Options struct {
	// Corrupt is the share of cases that get a mutation (0 to 1).
	Corrupt float64
}

// DefaultOptions mutate a third of the cases.
var DefaultOptions = Options{Corrupt: 1.0 / 3}

// Generate makes case i of seed: the same case on every run.
func Generate(seed uint64, i int, o Options) Case {
	rng := rand.New(rand.NewPCG(seed, uint64(i)))
	c := Case{Seed: seed, Index: i}
	size := randomSize(rng)
	depth := 1
	if rng.IntN(3) == 0 { // a third are chains
		depth = 2 + rng.IntN(2)
	}
	for d := range depth {
		typ := TypeDifferencing
		if d == depth-1 {
			typ = []int{TypeFixed, TypeDynamic, TypeDynamic}[rng.IntN(3)]
		}
		c.Layers = append(c.Layers, newLayer(rng, layerName(d), typ, size))
	}
	// A chain's layers are one disk size: one creator and geometry (the
	// size of "vpc " and "qemu" images is their CHS product).
	for d := range c.Layers {
		c.Layers[d].Creator, c.Layers[d].Geometry = c.Layers[depth-1].Creator, c.Layers[depth-1].Geometry
	}
	if rng.Float64() < o.Corrupt {
		m := randomMutation(rng, c.Layers)
		c.Mutation = &m
	}
	return c
}

func layerName(d int) string {
	if d == 0 {
		return "disk.vhd"
	}
	return fmt.Sprintf("parent%d.vhd", d)
}

// randomSize: odd sizes mostly, up to 4 MiB; a sector; a power of two.
func randomSize(rng *rand.Rand) int64 {
	switch rng.IntN(6) {
	case 0:
		return SectorSize * int64(1+rng.IntN(8))
	case 1:
		return 1 << (12 + rng.IntN(11)) // 4 KiB .. 4 MiB
	}
	return SectorSize * int64(1+rng.IntN(8192))
}

// pastTimestamp is 2025-01-01 in VHD time: timestamps are before it (a
// later one is in the future on some clocks, a warning of its own).
const pastTimestamp = 788918400

var (
	creators = []string{"win ", "vpc ", "qemu", "qem2", "tap\x00", "d2v ", "CTXS", "vbox", "vs  ", "\x00\x00\x00\x00"}
	hostOSes = []string{"Wi2k", "Mac ", "\x00\x00\x00\x00", "Linu"}
	locKinds = [][]string{{"W2ru"}, {"W2ku"}, {"MacX"}, {"W2ku", "W2ru", "MacX"}, {"Wi2r", "Wi2k", "W2ru"}, {"MacX", "W2ku"}, nil}
)

func newLayer(rng *rand.Rand, name string, typ int, size int64) Layer {
	l := Layer{Name: name, Type: typ, Size: size, Salt: rng.Uint32(),
		Creator: creators[rng.IntN(len(creators))], HostOS: hostOSes[rng.IntN(len(hostOSes))],
		Geometry: geometryQuirk(rng, size), Timestamp: rng.Uint32N(pastTimestamp)}
	for i := range l.UUID {
		l.UUID[i] = byte(rng.Uint32())
	}
	if typ == TypeFixed {
		l.Short = rng.IntN(6) == 0
		writeRuns(rng, &l, 0, size/SectorSize)
		return l
	}
	l.BlockSize = int64(SectorSize) << rng.IntN(20) // 512 B .. 256 MiB: every legal size
	if rng.IntN(3) == 0 {
		l.BlockSize = 2 << 20
	}
	l.ExtraEntries = []int{0, 0, 0, 1, 127, 128}[rng.IntN(6)]
	if typ == TypeDifferencing {
		l.Locators = locKinds[rng.IntN(len(locKinds))]
		l.Junk = rng.IntN(2) == 0
		l.ParentTimeZero = rng.IntN(4) == 0
	}
	fillBlocks(rng, &l)
	return l
}

// geometryQuirk: the specification's CHS mostly; else none, the maximum
// (which says "use the current size") or another.
func geometryQuirk(rng *rand.Rand, size int64) Geometry {
	switch rng.IntN(8) {
	case 0:
		return Geometry{}
	case 1:
		return Geometry{65535, 16, 255}
	case 2:
		return Geometry{uint16(rng.IntN(65536)), uint8(rng.IntN(17)), uint8(rng.IntN(256))}
	}
	return GeometryFor(size)
}

// fillBlocks allocates some blocks, in ascending or shuffled order, each
// written fully, partly (a partial bitmap) or not at all.
func fillBlocks(rng *rand.Rand, l *Layer) {
	n := l.blockCount()
	if n > 4096 { // tiny blocks: keep the file small
		n = 4096
	}
	p := rng.Float64()
	for b := range n {
		if rng.Float64() < p {
			l.Blocks = append(l.Blocks, int(b))
		}
	}
	if rng.IntN(2) == 0 {
		rng.Shuffle(len(l.Blocks), func(i, j int) { l.Blocks[i], l.Blocks[j] = l.Blocks[j], l.Blocks[i] })
	}
	per := l.BlockSize / SectorSize
	for _, b := range l.Blocks {
		first, end := int64(b)*per, min(int64(b+1)*per, l.Size/SectorSize)
		switch rng.IntN(4) {
		case 0: // allocated, nothing written
		case 1:
			for s := first; s < end; s++ {
				l.SetWritten(s, true)
			}
		default:
			writeRuns(rng, l, first, end)
		}
	}
}

// writeRuns marks a few runs of sectors in [first, end) written: single
// sectors and runs that cross bitmap bytes, so partial bitmap bytes occur.
func writeRuns(rng *rand.Rand, l *Layer, first, end int64) {
	if end <= first {
		return
	}
	for range 1 + rng.IntN(6) {
		s := first + rng.Int64N(end-first)
		n := 1 + rng.Int64N(min(end-s, []int64{1, 3, 9, 64, 1 << 20}[rng.IntN(5)]))
		for k := s; k < s+n; k++ {
			l.SetWritten(k, true)
		}
	}
}
