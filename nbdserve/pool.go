package nbdserve

import (
	"math/bits"
	"sync"
)

// Buffers for request data come from size-class pools (powers of two from
// 4 KiB to 64 MiB), so a steady stream of requests allocates nothing.
const (
	minClassShift = 12
	maxClassShift = 26
)

var bufPools [maxClassShift - minClassShift + 1]sync.Pool

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// getBuf returns a buffer of length n.
func getBuf(n int) []byte {
	c := classOf(n)
	if c >= len(bufPools) {
		return make([]byte, n)
	}
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<(c+minClassShift))
}

// putBuf gives b back to its pool.
func putBuf(b []byte) {
	c := classOf(cap(b))
	if b == nil || c >= len(bufPools) || cap(b) != 1<<(c+minClassShift) {
		return
	}
	b = b[:0]
	bufPools[c].Put(&b)
}

var requestPool = sync.Pool{New: func() any { return new(request) }}
