package chains

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"vhdkit/engine"
)

// DefaultMaxDepth is how many layers a chain may have unless told
// otherwise.
const DefaultMaxDepth = 256

// Options control how a chain is opened.
type Options struct {
	// ReadOnly opens the top layer read-only too.
	ReadOnly bool
	// ParentDirs confine parents to these folders (with their
	// subfolders); with any set, a locator leading elsewhere is an
	// error. ParentDirsFromEnv gives VHD_PARENT_PATH's.
	ParentDirs []string
	// MaxDepth bounds the number of layers; DefaultMaxDepth if 0.
	MaxDepth int
	// AcceptModifiedParent opens a child whose parent's timestamp no
	// longer matches the one the child recorded.
	AcceptModifiedParent bool
	// NoLock skips OS locks (inspection only).
	NoLock bool
	// Salvage opens every layer as engine.Options.Salvage does, to copy
	// what a damaged chain still holds (with ReadOnly); Lost says what
	// could not be read.
	Salvage bool
	// ReadCacheBytes bounds the memory of the chain's read cache
	// (resolve_cache.go); DefaultReadCacheBytes if 0.
	ReadCacheBytes int64
	Logger         *slog.Logger
	// ignoreMerges opens layers an unfinished merge left behind: only
	// the merge itself may (see openMidMerge).
	ignoreMerges bool
}

// Layer is one image of a chain.
type Layer struct {
	Image *engine.Image
	// Path is where the image was found (symlinks resolved for parents).
	Path string
	// Found says how the parent was found ("W2ru locator", ...); empty
	// for the top.
	Found string
	// id names the layer in the read cache while the chain is open:
	// unlike its index, it stays when a live snapshot or merge changes
	// the layers around it (live.go).
	id int32
	// ref counts the chains that hold Image open (a served chain and the
	// read-only views cut from it, View); nil when this chain alone does.
	ref *atomic.Int32
}

// Chain is a differencing chain opened as one disk: the top image and its
// ancestors down to a fixed or dynamic base. Writes go to the top. It
// implements engine.Disk. Its layers can change while it is used: a live
// snapshot or merge (live.go) swaps them behind a write gate.
type Chain struct {
	// gate is held shared by every request and exclusively by a live
	// change of the layers, so a change waits for the requests in flight
	// and new requests wait for the change.
	gate sync.RWMutex
	// layers, top first, is replaced as a whole under the gate, never
	// changed in place: parent views (below) hold slices of it.
	layers []Layer
	// byID maps a layer id to the image its cached runs are read from:
	// after a live merge, the merged layer's id maps to the layer it was
	// merged into, which holds the same data. Guarded by gate.
	byID []*engine.Image
	res  *resolver
	size int64
	// readOnly, opts: as opened.
	readOnly bool
	opts     Options
	// undoOf is the image whose undo disk the top is (OpenUndo), or "".
	undoOf string
	// undoMade says this chain made its undo disk (OpenUndo created it,
	// or found it empty with nothing over it, or a live undo commit or
	// discard replaced it): Close deletes it if it holds nothing
	// (undo_empty.go), and undoRemoved says it did.
	undoMade, undoRemoved bool
	// live lets one live operation run at a time (live.go).
	live sync.Mutex
	// dirty is set while a live merge of the top copies it: writes mark
	// what they change, to be copied again, and hold copyMu shared while
	// they land; the copier holds it exclusively (live_merge_top.go).
	dirty  atomic.Pointer[dirtyMap]
	copyMu sync.RWMutex
}

var _ engine.Disk = (*Chain)(nil)

// Open opens the image at path and, if it is a differencing image, every
// ancestor, checking each link: the parent's UUID, its timestamp (unless
// opts.AcceptModifiedParent), its size, the allowed folders, cycles and
// depth. Parents open read-only. Opening for writing an image that has an
// undo disk or differencing children is refused (see guard.go); a layer
// an unfinished merge left behind is refused with ErrMergeInterrupted.
func Open(path string, opts Options) (*Chain, error) {
	c, err := openKeepingView(path, opts)
	if err != nil || opts.ReadOnly {
		return c, err
	}
	// Under the top's exclusive lock: no vhdkit process can add a child
	// meanwhile (that takes a shared lock on the parent).
	if err := refuseDependents(path, c.Top().Footer().UUID, opts.ParentDirs, nil, false, forWriting); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// openKeepingView is Open without the check for dependents, for writers
// that keep what the image shows (compaction).
func openKeepingView(path string, opts Options) (*Chain, error) {
	if !opts.ignoreMerges {
		if err := mergeUnderway(path); err != nil {
			return nil, err
		}
	}
	return open(path, opts)
}

// open is Open without the check of the top.
func open(path string, opts Options) (*Chain, error) {
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = DefaultMaxDepth
	}
	conf, err := newConfinement(opts.ParentDirs)
	if err != nil {
		return nil, err
	}
	top, err := engine.Open(path, engine.Options{ReadOnly: opts.ReadOnly, NoLock: opts.NoLock, Logger: opts.Logger, Salvage: opts.Salvage})
	if err != nil {
		return nil, err
	}
	c := &Chain{layers: []Layer{{Image: top, Path: path}}, opts: opts}
	seen := map[fileID]string{}
	if id, err := idOf(path); err == nil {
		seen[id] = path
	}
	for cur := c.layers[0]; cur.Image.Type() == engine.TypeDifferencing; cur = c.layers[len(c.layers)-1] {
		if len(c.layers) >= opts.MaxDepth {
			c.Close()
			return nil, fmt.Errorf("%s: %w: more than %d layers (raise the limit with --max-depth)", path, ErrTooDeep, opts.MaxDepth)
		}
		parent, err := openParent(cur, conf, opts, seen)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.layers = append(c.layers, parent)
	}
	c.wire()
	return c, nil
}

// wire readies a chain whose layers were just opened: each layer gets its
// id (its index), the chain its size and its read cache, and each
// differencing layer its parent (wireParents).
func (c *Chain) wire() {
	c.byID = make([]*engine.Image, len(c.layers))
	for i := range c.layers {
		c.layers[i].id = int32(i)
		c.layers[i].ref = new(atomic.Int32)
		c.layers[i].ref.Store(1)
		c.byID[i] = c.layers[i].Image
	}
	c.size = c.layers[0].Image.Size()
	c.readOnly = c.layers[0].Image.ReadOnly()
	c.wireParents(len(c.layers))
	c.res = newResolver(c, c.opts.ReadCacheBytes)
}

// wireParents gives each of the first n layers its parent: a view of the
// whole chain below it (the top's zero elision asks that view whether any
// ancestor holds data). Layers below n keep theirs: a live change rewires
// only the layers whose chain below changed.
func (c *Chain) wireParents(n int) {
	for i := 0; i < n && i+1 < len(c.layers); i++ {
		c.layers[i].Image.SetParent(below{c.layers[i+1:]})
	}
}

// fileID identifies a file across paths, for cycle detection.
type fileID struct{ dev, ino uint64 }

func idOf(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, errors.New("no inode")
	}
	return fileID{uint64(sys.Dev), sys.Ino}, nil
}

// openParent finds, vets and opens the parent of child. A salvage looks
// for a sound parent first, as every other open does, and opens a
// damaged one for salvage only when there is none: a damaged copy next
// to the child must not win over a sound parent a locator leads to.
func openParent(child Layer, conf *confinement, opts Options, seen map[fileID]string) (Layer, error) {
	if opts.Salvage {
		sound := opts
		sound.Salvage = false
		p, err := openParentAs(child, conf, sound, seen)
		if nf := (*ParentNotFoundError)(nil); !errors.As(err, &nf) {
			return p, err
		}
	}
	return openParentAs(child, conf, opts, seen)
}

// openParentAs is openParent with opts as they are.
func openParentAs(child Layer, conf *confinement, opts Options, seen map[fileID]string) (Layer, error) {
	var p Layer
	err := findParent(child.Path, child.Image, conf, func(cand candidate, real string) (string, error) {
		if id, err := idOf(real); err == nil {
			if prev, ok := seen[id]; ok {
				return "", fmt.Errorf("%s: %w: its parent %s is already in the chain (as %s)", child.Path, ErrCycle, real, prev)
			}
		}
		img, why, err := openCandidate(real, child.Image.Header().ParentUUID, child.Image.HasRawParent(), opts)
		if err != nil {
			return "", fmt.Errorf("%s: parent via %s: %w", child.Path, cand.from, err)
		}
		if img == nil {
			return why, nil
		}
		p = Layer{Image: img, Path: real, Found: cand.from}
		if err := checkLink(child, p, opts, seen); err != nil {
			img.Close()
			return "", err
		}
		return "", nil
	})
	var nf *ParentNotFoundError
	if errors.As(err, &nf) {
		nf.lookForMoved(append([]string{filepath.Dir(absPath(child.Path))}, conf.dirs...), child.Image)
	}
	return p, err
}

// openCandidate opens a vetted candidate read-only. A file that is not a
// VHD (damaged, or another format), or not the one with the recorded
// UUID, is not used: img is nil and why says what it was. The parent of
// a child whose parent is raw (blktap's vhd-util snapshot -m, a null
// UUID) is opened as a raw disk: there is no UUID to check, and its
// file time is what the child recorded.
func openCandidate(path string, want engine.UUID, raw bool, opts Options) (img *engine.Image, why string, err error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, "", err
	}
	if raw {
		img, err = engine.OpenRawParent(f, path, engine.Options{ReadOnly: true, NoLock: opts.NoLock, Logger: opts.Logger})
		return img, "", err
	}
	img, err = engine.OpenOS(f, path, engine.Options{ReadOnly: true, NoLock: opts.NoLock, Logger: opts.Logger, Salvage: opts.Salvage})
	if errors.Is(err, engine.ErrCorrupt) || errors.Is(err, engine.ErrOtherFormat) {
		return nil, fmt.Sprintf("not a usable VHD (%v)", err), nil
	}
	if err != nil {
		return nil, "", err
	}
	if got := img.Footer().UUID; got != want {
		img.Close()
		return nil, fmt.Sprintf("UUID %s, the child expects %s", got, want), nil
	}
	return img, "", nil
}

// checkLink checks what a parent with the right UUID must also satisfy.
func checkLink(child, parent Layer, opts Options, seen map[fileID]string) error {
	id, err := idOf(parent.Path)
	if err != nil {
		return err
	}
	seen[id] = parent.Path
	return linkHolds(child.Path, child.Image, parent.Path, parent.Image, opts)
}

// linkHolds checks the link from child to a parent with the right UUID:
// no merge left unfinished in it, its timestamp. Open and the folder scan
// (Scan) share it, so both judge a link alike. Sizes may differ (Xen's
// vhd-util resize grows a leaf; vhd-util snapshot may make a child
// larger than its parent): past a parent's end it shows zeros, and a
// smaller child shows its parent's first bytes (below, walkLayers).
func linkHolds(childPath string, child metadata, parentPath string, parent metadata, opts Options) error {
	if !opts.ignoreMerges {
		if err := mergeUnderway(parentPath); err != nil {
			return err
		}
	}
	if !opts.AcceptModifiedParent && !linkTimeMatches(childPath, child, parent, parentPath) {
		return modifiedParentError(childPath, child, parentPath, parent)
	}
	return nil
}

// linkTimeMatches: the child's recorded parent timestamp is 0 (Windows
// writes that), the parent's footer timestamp (Virtual PC, vhdkit, which
// stamps an image's footer when it first modifies it) or the parent
// file's modification time, which Xen's tools record (vhd-util snapshot
// and modify -p, whatever made the child: they re-link vhdkit's children
// too, and vhd compact of theirs used to rewrite the creator).
//
// A file time counts only while the parent file has not been written
// since the child was: Xen's tools read the parent's time and then write
// the child, and nothing writes a parent under its children. File times
// are recorded in whole seconds, so without that condition a child would
// accept a parent written in the very second its recorded time names (a
// vhdkit child records its parent's footer stamp, which is about when the
// parent was last written).
func linkTimeMatches(childPath string, child, parent metadata, parentPath string) bool {
	want := child.Header().ParentTimestamp
	if want == 0 || want == parent.Footer().Timestamp {
		return true
	}
	pst, err := os.Stat(parentPath)
	if err != nil || engine.TimestampOf(pst.ModTime()) != want {
		return false
	}
	// Not After rather than Before: Xen's tools can write a parent and
	// re-link its child within one tick of the kernel's coarse file
	// clock (a few ms), leaving equal times. The price: a parent written
	// within that tick after its child, in the second the child
	// recorded, is not seen as modified.
	cst, err := os.Stat(childPath)
	return err == nil && !pst.ModTime().After(cst.ModTime())
}

// fileTime is the modification time of path as a VHD timestamp.
func fileTime(path string) (uint32, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	return engine.TimestampOf(st.ModTime()), true
}

// LostIn is what a salvage open (Options.Salvage) could not read of one
// layer.
type LostIn struct {
	Layer string
	*engine.LostReport
}

// Lost lists, top first, the layers a salvage open could not wholly
// read; none for any other open.
func (c *Chain) Lost() []LostIn {
	var out []LostIn
	for _, l := range c.Layers() {
		if r := l.Image.Lost(); r != nil {
			out = append(out, LostIn{Layer: l.Path, LostReport: r})
		}
	}
	return out
}

// Layers lists the chain, top first, as it stands now.
func (c *Chain) Layers() []Layer {
	c.gate.RLock()
	defer c.gate.RUnlock()
	return slices.Clone(c.layers)
}

// Top is the image writes go to now.
func (c *Chain) Top() *engine.Image {
	c.gate.RLock()
	defer c.gate.RUnlock()
	return c.layers[0].Image
}

// Depth is the number of layers now.
func (c *Chain) Depth() int {
	c.gate.RLock()
	defer c.gate.RUnlock()
	return len(c.layers)
}

// Close closes every layer no other chain (a view) still holds; an undo
// disk this chain made and left empty is deleted first (undo_empty.go).
func (c *Chain) Close() error {
	c.gate.Lock()
	defer c.gate.Unlock()
	c.undoRemoved = c.removeEmptyUndo()
	var first error
	for _, l := range c.layers {
		if err := l.release(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// release closes the layer's image unless another chain still holds it.
func (l Layer) release() error {
	if l.ref != nil && l.ref.Add(-1) > 0 {
		return nil
	}
	return l.Image.Close()
}

// absPath is a best-effort absolute, clean path.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}
