package chains

import "vhdkit/engine"

// The optional engine capabilities a chain offers (engine/capability.go).
// capability_test.go checks this list against that file.
var (
	_ engine.FastZeroer       = (*Chain)(nil)
	_ engine.ParentShower     = (*Chain)(nil)
	_ engine.WritebackStarter = (*Chain)(nil)
)

// ZeroIsFast implements engine.FastZeroer. Zeros go to the top, whose
// parent view (wire) tells it where the layers below hold data, so the
// top answers for the whole chain.
func (c *Chain) ZeroIsFast(off, n int64, mode engine.ZeroMode) bool {
	return c.Top().ZeroIsFast(off, n, mode)
}

// ShowsParent implements engine.ParentShower. It is not the top's answer:
// a chain's holes are where no layer holds anything, and they read as
// zeros, since its bottom is a fixed or dynamic image.
func (c *Chain) ShowsParent() bool { return false }

// StartWriteback implements engine.WritebackStarter: only the top is
// ever written.
func (c *Chain) StartWriteback() error { return c.Top().StartWriteback() }
