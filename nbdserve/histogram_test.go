package nbdserve

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// Every value lands in a bucket whose range holds it, buckets are in
// order and adjacent, and a bucket's width is at most 1/16 of its values.
func TestHistogramBuckets(t *testing.T) {
	check := func(v uint64) {
		i := bucketOf(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, outside 0..%d", v, i, numBuckets-1)
		}
		if i == numBuckets-1 && v > bucketTop(i) {
			return // beyond the range: the last bucket, max stays exact
		}
		lo := uint64(0)
		if i > 0 {
			lo = bucketTop(i-1) + 1
		}
		if v < lo || v > bucketTop(i) {
			t.Fatalf("bucketOf(%d) = %d, which holds %d..%d", v, i, lo, bucketTop(i))
		}
		if w := bucketTop(i) - lo; float64(w) > float64(lo)/subBuckets {
			t.Fatalf("bucket %d (%d..%d) is wider than 1/16 of its values", i, lo, bucketTop(i))
		}
	}
	for v := range uint64(1 << 16) {
		check(v)
	}
	for e := 16; e < 64; e++ {
		for _, d := range []int64{-1, 0, 1} {
			check(uint64(int64(1)<<e + d))
		}
	}
	check(math.MaxUint64)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		check(rng.Uint64() >> rng.IntN(64))
	}
}

// Percentiles of known latencies are within the buckets' 6.25% and never
// below the true value; max and mean are exact.
func TestHistogramPercentiles(t *testing.T) {
	var h histogram
	rng := rand.New(rand.NewPCG(3, 4))
	var all []time.Duration
	var sum time.Duration
	for range 100000 {
		// Log-uniform from 1 µs to 100 ms, like real request latencies.
		d := time.Duration(math.Exp(rng.Float64()*math.Log(1e5)) * 1e3)
		all = append(all, d)
		sum += d
		h.record(d)
	}
	slices.Sort(all)
	var c latencyCounts
	h.addTo(&c)
	if c.count != uint64(len(all)) {
		t.Fatalf("count %d, want %d", c.count, len(all))
	}
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		want := uint64(all[int(math.Ceil(q*float64(len(all))))-1])
		got := c.percentile(q)
		if got < want || float64(got) > float64(want)*(1+1.0/subBuckets) {
			t.Errorf("p%g = %d ns, true value %d ns", q*100, got, want)
		}
	}
	s := c.summary()
	if s.MaxMicros != float64(all[len(all)-1])/1e3 {
		t.Errorf("max %g µs, want %g", s.MaxMicros, float64(all[len(all)-1])/1e3)
	}
	if want := float64(uint64(sum)/uint64(len(all))) / 1e3; s.MeanMicros != want {
		t.Errorf("mean %g µs, want %g", s.MeanMicros, want)
	}
	if !(s.P50Micros <= s.P90Micros && s.P90Micros <= s.P99Micros && s.P99Micros <= s.MaxMicros) {
		t.Errorf("percentiles out of order: %+v", s)
	}
}

func TestHistogramEdges(t *testing.T) {
	var empty latencyCounts
	if s := empty.summary(); s != (LatencyStats{}) {
		t.Errorf("empty histogram: %+v, want zeros", s)
	}
	var h histogram
	h.record(-5) // a clock step cannot make a negative latency count as huge
	h.record(3)
	h.record(time.Hour) // beyond the buckets: the last one, max exact
	var c latencyCounts
	h.addTo(&c)
	if c.buckets[0] != 1 || c.buckets[3] != 1 || c.buckets[numBuckets-1] != 1 {
		t.Errorf("buckets 0, 3, last: %d %d %d", c.buckets[0], c.buckets[3], c.buckets[numBuckets-1])
	}
	if got := c.percentile(1); got != uint64(time.Hour) {
		t.Errorf("p100 = %d, want an hour", got)
	}
	if got := c.percentile(0.5); got != 3 {
		t.Errorf("p50 of 0, 3 ns and an hour = %d, want 3", got)
	}
}

// Many goroutines record at once; nothing is lost.
func TestHistogramConcurrent(t *testing.T) {
	var h histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10000 {
				h.record(time.Duration(g*10000 + i))
			}
		})
	}
	wg.Wait()
	var c latencyCounts
	h.addTo(&c)
	if c.count != 80000 || c.maxNs != 79999 || c.sum != 79999*80000/2 {
		t.Errorf("count %d max %d sum %d", c.count, c.maxNs, c.sum)
	}
}
