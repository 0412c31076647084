package vhdgen

import (
	"encoding/json"
	"slices"
)

// Shrinks lists smaller variants of c, biggest cuts first: the disk
// halved, a layer dropped, half a layer's blocks dropped, its block size
// halved, half its sectors unwritten, then single blocks and quirks.
// Minimising keeps the first variant that still shows a finding and asks
// again, until none does.
func (c Case) Shrinks() []Case {
	var out []Case
	if v, ok := c.halve(); ok {
		out = append(out, v)
	}
	for k := range c.Layers {
		if v, ok := c.dropLayer(k); ok {
			out = append(out, v)
		}
	}
	for k, l := range c.Layers {
		if len(l.Blocks) > 1 {
			v := c.clone()
			for range len(l.Blocks) / 2 {
				v.Layers[k].dropBlock(len(v.Layers[k].Blocks) - 1)
			}
			out = append(out, v)
		}
		if l.sparse() && l.BlockSize > minShrunkBlock {
			v := c.clone()
			v.Layers[k].halveBlocks()
			out = append(out, v)
		}
		if l.countWritten() > 1 {
			v := c.clone()
			v.Layers[k].unwriteHalf()
			out = append(out, v)
		}
	}
	for k, l := range c.Layers {
		for i := range l.Blocks {
			v := c.clone()
			v.Layers[k].dropBlock(i)
			out = append(out, v)
		}
		out = append(out, c.simpler(k)...)
	}
	return out
}

// minShrunkBlock is the smallest block size minimising makes: smaller
// blocks are a quirk of their own (some readers misread them), which a
// finding about something else must not pick up.
const minShrunkBlock = 4096

func (c Case) clone() Case {
	var v Case
	b, _ := json.Marshal(c)
	json.Unmarshal(b, &v)
	return v
}

// dropLayer removes layer k: the top (its parent becomes the image
// opened) or a middle one (its child's parent becomes its parent).
func (c Case) dropLayer(k int) (Case, bool) {
	if len(c.Layers) < 2 || k == len(c.Layers)-1 || c.Mutation != nil && c.Mutation.Layer == k {
		return c, false
	}
	v := c.clone()
	v.Layers = slices.Delete(v.Layers, k, k+1)
	if k == 0 {
		v.Layers[0].Name = c.Layers[0].Name
	}
	if v.Mutation != nil && v.Mutation.Layer > k {
		v.Mutation.Layer--
	}
	return v, true
}

// halve halves the disk (every layer), dropping what lies past the end.
func (c Case) halve() (Case, bool) {
	size := c.Layers[0].Size / 2 / SectorSize * SectorSize
	if size < SectorSize {
		return c, false
	}
	v := c.clone()
	for k := range v.Layers {
		l := &v.Layers[k]
		l.Size = size
		if l.Geometry.Bytes() > size && l.Geometry != (Geometry{65535, 16, 255}) {
			l.Geometry = GeometryFor(size)
		}
		l.Written = l.Written[:min(len(l.Written), int((size/SectorSize+7)/8))]
		for s := size / SectorSize; s < int64(len(l.Written))*8; s++ {
			l.SetWritten(s, false)
		}
		if l.sparse() {
			l.Blocks = slices.DeleteFunc(l.Blocks, func(b int) bool { return int64(b) >= l.blockCount() })
		}
	}
	return v, true
}

// dropBlock unallocates the layer's i-th block.
func (l *Layer) dropBlock(i int) {
	b := int64(l.Blocks[i])
	per := l.BlockSize / SectorSize
	for s := b * per; s < (b+1)*per && s < l.Size/SectorSize; s++ {
		l.SetWritten(s, false)
	}
	l.Blocks = slices.Delete(l.Blocks, i, i+1)
}

func (l *Layer) countWritten() int {
	n := 0
	for s := range l.Size / SectorSize {
		if l.IsWritten(s) {
			n++
		}
	}
	return n
}

// unwriteHalf unwrites the second half of the layer's written sectors.
func (l *Layer) unwriteHalf() {
	n := l.countWritten()
	seen := 0
	for s := range l.Size / SectorSize {
		if l.IsWritten(s) {
			seen++
			if seen > n/2 {
				l.SetWritten(s, false)
			}
		}
	}
}

// simpler undoes layer k's quirks one at a time.
func (c Case) simpler(k int) []Case {
	var out []Case
	try := func(change func(l *Layer) bool) {
		v := c.clone()
		if change(&v.Layers[k]) {
			out = append(out, v)
		}
	}
	try(func(l *Layer) bool { r := l.Junk; l.Junk = false; return r })
	try(func(l *Layer) bool { r := l.ExtraEntries > 0; l.ExtraEntries = 0; return r })
	try(func(l *Layer) bool {
		r := len(l.Locators) > 1
		l.Locators = l.Locators[:min(1, len(l.Locators))]
		return r
	})
	try(func(l *Layer) bool { r := !slices.IsSorted(l.Blocks); slices.Sort(l.Blocks); return r })
	try(func(l *Layer) bool { r := l.Short; l.Short = false; return r })
	return out
}

// halveBlocks halves the block size: each block becomes its two halves
// (those inside the disk), the sectors written unchanged.
func (l *Layer) halveBlocks() {
	l.BlockSize /= 2
	var blocks []int
	for _, b := range l.Blocks {
		for _, h := range []int{2 * b, 2*b + 1} {
			if int64(h) < l.blockCount() {
				blocks = append(blocks, h)
			}
		}
	}
	l.Blocks = blocks
	l.ExtraEntries = 0
}
