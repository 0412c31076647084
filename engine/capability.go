package engine

// Optional capabilities of a Disk. A consumer asks for one by asserting
// its named interface; a wrapper (chains.Chain) implements every one it
// can, and the chains capability test reads this file to list them all,
// so a capability is never lost in wrapping.

// FastZeroer is a disk that can tell in advance whether a Zero would be
// cheap. NBD's FAST_ZERO asks exactly that.
type FastZeroer interface {
	// ZeroIsFast reports whether Zero(off, n, mode) would write no data:
	// only metadata changes and holes are made. It is a prediction; the
	// disk may change between it and the Zero.
	ZeroIsFast(off, n int64, mode ZeroMode) bool
}

// ParentShower is a disk whose holes (ExtentHole) may show another
// disk's data instead of reading as zeros. A disk without it reads its
// holes as zeros.
type ParentShower interface {
	// ShowsParent reports whether the disk's holes show a parent.
	ShowsParent() bool
}

// WritebackStarter is a disk (or File) that can start writing its dirty
// data to stable storage without waiting, so a later Flush or Sync has
// less left to do. It makes nothing durable.
type WritebackStarter interface {
	StartWriteback() error
}

var (
	_ FastZeroer       = (*Image)(nil)
	_ ParentShower     = (*Image)(nil)
	_ WritebackStarter = (*Image)(nil)
	_ WritebackStarter = (*RawDisk)(nil)
)

// ShowsParent implements ParentShower: a differencing image's holes show
// its parent.
func (img *Image) ShowsParent() bool { return img.Type() == TypeDifferencing }
