package nbdserve

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram counts request latencies in log-linear buckets, as
// HdrHistogram does: every power of two of nanoseconds is split into
// subBuckets equal buckets, so a bucket is at most 1/16 (6.25%) wide
// relative to its values, from 1 ns to 2^maxExp ns (18 minutes; longer
// ones fall in the last bucket, and max stays exact). It is a fixed array
// of atomic counters: recording allocates nothing and takes no lock, and
// connections record into the same histogram at once.
//
// Bucket layout, for a value v in nanoseconds:
//
//	v < 16                 bucket v (exact)
//	2^e <= v < 2^(e+1)     bucket (e-3)*16 + the 4 bits of v below its top bit
type histogram struct {
	buckets [numBuckets]atomic.Uint64
	// sum and max are in nanoseconds.
	sum atomic.Uint64
	max atomic.Uint64
}

const (
	subBucketBits = 4
	subBuckets    = 1 << subBucketBits
	maxExp        = 40
	numBuckets    = (maxExp - subBucketBits + 1) * subBuckets
)

// bucketOf is the bucket that counts v nanoseconds.
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	e := bits.Len64(v) - 1
	if e >= maxExp {
		return numBuckets - 1
	}
	sub := int(v>>(e-subBucketBits)) & (subBuckets - 1)
	return (e-subBucketBits+1)<<subBucketBits + sub
}

// bucketTop is the largest value bucket i counts: what a percentile that
// falls in it reports, so a percentile is never below the true one.
func bucketTop(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	e := i>>subBucketBits + subBucketBits - 1
	sub := uint64(i & (subBuckets - 1))
	width := uint64(1) << (e - subBucketBits)
	return (subBuckets+sub)*width + width - 1
}

// record counts one latency. It updates max, then the bucket, then sum,
// and addTo reads them in the opposite order, so a snapshot's max covers
// every latency it counts and its sum none it does not count.
func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	for {
		old := h.max.Load()
		if v <= old || h.max.CompareAndSwap(old, v) {
			break
		}
	}
	h.buckets[bucketOf(v)].Add(1)
	h.sum.Add(v)
}

// latencyCounts is a histogram read out, counter by counter (so under load
// the counters may be a few requests apart), to be added up and queried.
type latencyCounts struct {
	buckets    [numBuckets]uint64
	count      uint64
	sum, maxNs uint64
}

func (h *histogram) addTo(c *latencyCounts) {
	c.sum += h.sum.Load()
	for i := range h.buckets {
		n := h.buckets[i].Load()
		c.buckets[i] += n
		c.count += n
	}
	c.maxNs = max(c.maxNs, h.max.Load())
}

// add adds the counts of o.
func (c *latencyCounts) add(o *latencyCounts) {
	for i, n := range o.buckets {
		c.buckets[i] += n
	}
	c.count += o.count
	c.sum += o.sum
	c.maxNs = max(c.maxNs, o.maxNs)
}

// percentile is the latency that fraction q (0 < q <= 1) of the requests
// did not exceed, in nanoseconds: the top of the bucket holding that
// rank, capped by the largest latency seen.
func (c *latencyCounts) percentile(q float64) uint64 {
	if c.count == 0 {
		return 0
	}
	rank := uint64(q * float64(c.count))
	if float64(rank) < q*float64(c.count) {
		rank++ // the rank is rounded up: p50 of 3 requests is the 2nd
	}
	rank = max(rank, 1)
	var seen uint64
	for i, n := range c.buckets {
		seen += n
		if seen >= rank && i < numBuckets-1 {
			return min(bucketTop(i), c.maxNs)
		}
	}
	return c.maxNs
}

// summary is what a snapshot reports.
func (c *latencyCounts) summary() LatencyStats {
	us := func(ns uint64) float64 { return float64(ns) / 1e3 }
	s := LatencyStats{
		P50Micros: us(c.percentile(0.50)),
		P90Micros: us(c.percentile(0.90)),
		P99Micros: us(c.percentile(0.99)),
		MaxMicros: us(c.maxNs),
	}
	if c.count > 0 {
		s.MeanMicros = us(c.sum / c.count)
	}
	return s
}
