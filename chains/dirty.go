package chains

import (
	"math/bits"
	"sync/atomic"
)

// dirtyMap marks the granules of a disk that changed: a bit per 64 KiB,
// set without a lock by writers, taken (read and cleared at once) by the
// live merge that copies them. 2040 GiB, the largest VHD, is 4 MiB of
// bits.
type dirtyMap struct {
	words []atomic.Uint64
	size  int64
}

const dirtyShift = 16 // 64 KiB granules

func newDirtyMap(size int64) *dirtyMap {
	granules := (size + 1<<dirtyShift - 1) >> dirtyShift
	return &dirtyMap{words: make([]atomic.Uint64, (granules+63)/64), size: size}
}

// mark sets the granules under [off, off+n).
func (d *dirtyMap) mark(off, n int64) {
	if n <= 0 || off < 0 || off >= d.size {
		return
	}
	n = min(n, d.size-off)
	for g := off >> dirtyShift; g <= (off+n-1)>>dirtyShift; g++ {
		d.words[g/64].Or(1 << (g % 64))
	}
}

// take calls fn with each marked run of granules, as a byte range of the
// disk, clearing the marks first: a write that lands after the clear
// marks its granule again, for the next take. It returns the bytes
// handed to fn.
func (d *dirtyMap) take(fn func(off, n int64) error) (int64, error) {
	var total int64
	for w := range d.words {
		bitsSet := d.words[w].Swap(0)
		for bitsSet != 0 {
			first := bits.TrailingZeros64(bitsSet)
			length := bits.TrailingZeros64(^(bitsSet >> first))
			if first+length >= 64 {
				length = 64 - first
			}
			g := int64(w)*64 + int64(first)
			off := g << dirtyShift
			n := min(int64(length)<<dirtyShift, d.size-off)
			if err := fn(off, n); err != nil {
				return total, err
			}
			total += n
			if first+length >= 64 {
				break
			}
			bitsSet &^= (uint64(1)<<length - 1) << first
		}
	}
	return total, nil
}
