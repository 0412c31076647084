package chains

import (
	"fmt"
	"runtime"
	"testing"
)

// TestReadCacheAccounting: with a small bound, the cache's own count of
// its bytes stays under it while every chunk is read, and matches the
// heap the cache really holds (measured with the bound at 16 MiB, where
// it all fits, and at 4 MiB, where it does not).
func TestReadCacheAccounting(t *testing.T) {
	child := alternatingChild(t, t.TempDir(), 256<<20) // 128 chunks, 48 KiB each
	for _, bound := range []int64{16 << 20, 4 << 20} {
		_, c := heapAfterReads(t, child, Options{ReadOnly: true, ReadCacheBytes: bound})
		var with, without runtime.MemStats
		runtime.ReadMemStats(&with)
		counted := c.res.cachedBytes()
		c.res = newResolver(c, bound) // the old cache is garbage now
		runtime.GC()
		runtime.ReadMemStats(&without)
		c.Close()
		cache := int64(with.HeapAlloc) - int64(without.HeapAlloc)
		t.Logf("bound %d MiB: counted %.2f MiB, heap of the cache %.2f MiB", bound>>20, float64(counted)/(1<<20), float64(cache)/(1<<20))
		if counted > bound {
			t.Errorf("bound %d: the cache counts %d bytes", bound, counted)
		}
		if cache > counted+counted/10 || cache < counted*3/4 {
			t.Errorf("bound %d: the cache counts %d bytes, the heap says %d", bound, counted, cache)
		}
	}
}

// BenchmarkChainCacheHeap reports the heap a chain holds after one read
// of every chunk of a child with alternating sectors, by disk size, and
// what the cache counts (default bound).
func BenchmarkChainCacheHeap(b *testing.B) {
	for _, size := range []int64{1 << 30, 4 << 30, 16 << 30} {
		b.Run(fmt.Sprintf("disk=%dGiB", size>>30), func(b *testing.B) {
			child := alternatingChild(b, b.TempDir(), size)
			var heap, counted int64
			for b.Loop() {
				var c *Chain
				heap, c = heapAfterReads(b, child, Options{ReadOnly: true})
				counted = c.res.cachedBytes()
				c.Close()
			}
			b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(counted)/(1<<20), "counted-MiB")
		})
	}
}
