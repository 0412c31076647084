package engine

// Disk is the one disk layer every export serves: a single image, a chain
// of images or a read-only snapshot. Offsets and lengths are bytes; any
// alignment is accepted (sub-sector writes read, modify and write a
// sector). Methods are safe for concurrent use.
type Disk interface {
	// Size is the virtual size in bytes.
	Size() int64
	// ReadAt follows io.ReaderAt: a read that reaches the end returns
	// the bytes before it and io.EOF.
	ReadAt(p []byte, off int64) (int, error)
	// WriteAt writes p; a write past the end writes nothing and returns
	// ErrOutOfRange. The data is durable once a later Flush returns.
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes every write acknowledged before it durable, data and
	// metadata.
	Flush() error
	// Zero makes [off, off+n) read as zeros. With ZeroMayDeallocate the
	// disk may free the space (and does, for whole blocks);
	// with ZeroKeepAllocated the range stays allocated.
	Zero(off, n int64, mode ZeroMode) error
	// Trim tells the disk the range's contents are no longer needed. It
	// reads as zeros afterwards on a base image; a differencing layer may
	// show its parent's data again.
	Trim(off, n int64) error
	// Extents describes [off, off+n) as a run of extents that cover it
	// exactly, adjacent extents of one state merged. The number of
	// extents is at most n/512 (bitmaps are per sector): callers bound n.
	Extents(off, n int64) ([]Extent, error)
	// ReadOnly reports whether writes are refused.
	ReadOnly() bool
	Close() error
}

// ZeroMode says whether zeroing may deallocate.
type ZeroMode int

const (
	// ZeroMayDeallocate lets the disk free the range.
	ZeroMayDeallocate ZeroMode = iota
	// ZeroKeepAllocated keeps (or makes) the range allocated, so later
	// writes to it cannot fail for lack of space (NBD's NO_HOLE).
	ZeroKeepAllocated
)

// ExtentState is what an extent of a disk holds.
type ExtentState uint8

const (
	// ExtentData is stored data, to be read.
	ExtentData ExtentState = iota
	// ExtentZero is allocated space known to read as zeros.
	ExtentZero
	// ExtentHole is space not allocated in this layer: zeros in a base
	// image, the parent's data in a differencing layer.
	ExtentHole
)

func (s ExtentState) String() string {
	switch s {
	case ExtentData:
		return "data"
	case ExtentZero:
		return "zero"
	case ExtentHole:
		return "hole"
	}
	return "unknown"
}

// Extent is a run of a disk in one state.
type Extent struct {
	Off, Len int64
	State    ExtentState
}

// appendExtent adds e to list, merging it with the last extent when they
// touch and share a state.
func appendExtent(list []Extent, e Extent) []Extent {
	if e.Len == 0 {
		return list
	}
	if n := len(list); n > 0 {
		last := &list[n-1]
		if last.State == e.State && last.Off+last.Len == e.Off {
			last.Len += e.Len
			return list
		}
	}
	return append(list, e)
}

// checkRange validates a request against a disk of size bytes.
func checkRange(off, n, size int64) error {
	if off < 0 || n < 0 || off > size || n > size-off {
		return ErrOutOfRange
	}
	return nil
}
