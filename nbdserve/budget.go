package nbdserve

import (
	"slices"
	"sync"
)

// budget is a byte semaphore for request data. Waiters are served in
// arrival order, so a large request is never passed over forever by
// small ones, and a wait can be abandoned (shutdown never waits on it).
type budget struct {
	max int64

	mu sync.Mutex
	// used is what is granted; waiters are the acquires not yet granted,
	// oldest first. Both guarded by mu.
	used    int64
	waiters []*budgetWaiter
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed when granted
}

func newBudget(max int64) *budget { return &budget{max: max} }

// size is what a request of n bytes takes: n, or the whole budget for a
// request larger than it, which then runs alone rather than never.
func (b *budget) size(n int64) int64 { return min(n, b.max) }

// acquire takes b.size(n) bytes, waiting in line behind earlier waiters.
// It returns false, holding nothing, if quit is closed first.
func (b *budget) acquire(n int64, quit <-chan struct{}) bool {
	n = b.size(n)
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.max {
		b.used += n
		b.mu.Unlock()
		return true
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return true
	case <-quit:
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready: // granted meanwhile: give it back
		b.used -= n
	default:
		b.waiters = slices.DeleteFunc(b.waiters, func(x *budgetWaiter) bool { return x == w })
	}
	b.grant()
	return false
}

// release gives back what acquire(n) took.
func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= b.size(n)
	b.grant()
	b.mu.Unlock()
}

// grant serves waiters in order while the first fits. Called with mu held.
func (b *budget) grant() {
	for len(b.waiters) > 0 && b.used+b.waiters[0].n <= b.max {
		w := b.waiters[0]
		b.waiters = slices.Delete(b.waiters, 0, 1)
		b.used += w.n
		close(w.ready)
	}
}
