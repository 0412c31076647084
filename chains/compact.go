package chains

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"vhdkit/engine"
)

// CompactOptions control Compact.
type CompactOptions struct {
	Open     Options
	Progress func(done, total int64)
}

// CompactResult says what compaction reclaimed.
type CompactResult struct {
	FileBefore  int64 `json:"file_bytes_before"`
	FileAfter   int64 `json:"file_bytes_after"`
	HostBefore  int64 `json:"host_bytes_before"` // space the host gave the file
	HostAfter   int64 `json:"host_bytes_after"`
	BlocksFreed int64 `json:"blocks_freed"`
}

// Reclaimed is the host space given back: never negative, 0 when the new
// file takes more (HostGrowth).
func (r *CompactResult) Reclaimed() int64 { return max(0, r.HostBefore-r.HostAfter) }

// HostGrowth is how much more host space the new file takes than the
// old: a layout from another tool packs the first block's bitmap with the
// metadata, where the new one aligns blocks, which may cost a host block
// more than compaction gives back. 0 when it takes no more.
func (r *CompactResult) HostGrowth() int64 { return max(0, r.HostAfter-r.HostBefore) }

// Compact rewrites a dynamic or differencing image without the blocks
// that hold only zeros (in a child, only where no ancestor holds data
// there, else the zeros are data), without unused space, with every block
// in disk order and 4 KiB aligned. The image keeps its UUID, timestamp,
// parent link and file time, so its children stay valid, and Xen's hidden flag and
// a blktap creator (with a fresh batmap), so Xen's tools keep treating
// it as theirs.
//
// Crash safety: the new image is written to a temporary file in the same
// folder, flushed, and renamed over the old one, then the folder is
// synced: a crash leaves the old image or the new one, never a mix.
func Compact(ctx context.Context, path string, opts CompactOptions) (*CompactResult, error) {
	o := opts.Open
	o.ReadOnly = false // the exclusive lock: nobody else may use it meanwhile
	// Compaction keeps the data, UUID, timestamp and parent link, so what
	// the image's undo disk and children read stays the same.
	c, err := openKeepingView(path, o)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	top := c.Top()
	ft := top.Footer()
	switch {
	case top.Type() == engine.TypeFixed:
		return nil, fmt.Errorf("%s is a fixed image: nothing to compact (convert it to dynamic to make it sparse)", path)
	case ft.SavedState != 0:
		return nil, fmt.Errorf("%s has the saved-state flag set: a virtual machine saved its state with this disk; compacting would break that state — resume and shut down the machine first", path)
	}
	res := &CompactResult{}
	res.FileBefore, res.HostBefore = fileSizes(path)
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".compacting")
	os.Remove(tmp) // a leftover of a crashed compaction
	nimg, err := createCompacted(tmp, engine.CreateOptions{Type: top.Type(), Size: top.Size(), BlockSize: top.BlockSize(),
		UUID: ft.UUID, Time: engine.VHDTime(ft.Timestamp), KeepTimestamp: true, Parent: parentInfoOf(top),
		Creator: keptCreator(ft), Hidden: ft.Hidden})
	if err != nil {
		return nil, err
	}
	if c.Depth() > 1 {
		nimg.SetParent(below{c.layers[1:]})
	}
	err = copyLayer(ctx, top, nimg, opts.Progress)
	if err == nil {
		res.BlocksFreed = max(0, top.AllocatedBytes()-nimg.AllocatedBytes()) / max(1, top.BlockSize())
		err = nimg.Close()
	} else {
		nimg.Close()
	}
	if err == nil {
		// The file time too: children Xen's tools made recorded it as
		// the parent's time (chains.linkTimeMatches).
		err = os.Chtimes(tmp, st.ModTime(), st.ModTime())
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	res.FileAfter, res.HostAfter = fileSizes(path)
	return res, nil
}

// keptCreator is the creator a compacted image keeps: blktap's, so that
// Xen's tools go on keeping their batmap in it (the new image gets one)
// and treat it as theirs. Other creators give way to vhdkit's, which
// every reader sizes by the current size (see engine's creatorApp).
func keptCreator(ft engine.Footer) *engine.Creator {
	if !strings.HasPrefix(string(ft.CreatorApp[:]), "tap") {
		return nil
	}
	c := ft.CreatedBy()
	return &c
}

// createCompacted makes the new image. Tests replace it to put the new
// image on a file that simulates power loss.
var createCompacted = engine.Create

// parentInfoOf reads the parent link of a differencing image.
func parentInfoOf(img *engine.Image) *engine.ParentInfo {
	if img.Type() != engine.TypeDifferencing {
		return nil
	}
	h := img.Header()
	p := &engine.ParentInfo{UUID: h.ParentUUID, Timestamp: h.ParentTimestamp, Name: h.ParentName}
	locs, _ := img.ParentLocators()
	for _, l := range locs {
		if l.Path != "" {
			p.Locators = append(p.Locators, engine.LocatorPath{Code: l.Code, Path: l.Path})
		}
	}
	return p
}

// copyLayer copies what src itself stores into dst, in disk order; dst
// elides what reads as zeros anyway.
func copyLayer(ctx context.Context, src, dst *engine.Image, progress func(done, total int64)) error {
	size := src.Size()
	buf := make([]byte, 4<<20)
	const window = 256 << 20
	for off := int64(0); off < size; off += window {
		ext, err := src.Extents(off, min(window, size-off))
		if err != nil {
			return err
		}
		for _, e := range ext {
			if e.State != engine.ExtentData {
				continue
			}
			for p := e.Off; p < e.Off+e.Len; {
				if err := ctx.Err(); err != nil {
					return err
				}
				n := min(int64(len(buf)), e.Off+e.Len-p)
				if err := src.ReadStored(buf[:n], p); err != nil {
					return err
				}
				if _, err := dst.WriteAt(buf[:n], p); err != nil {
					return err
				}
				p += n
			}
		}
		if progress != nil {
			progress(min(off+window, size), size)
		}
	}
	return nil
}

// fileSizes gives a file's length and the space the host gave it.
func fileSizes(path string) (size, host int64) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		host = sys.Blocks * 512
	}
	return st.Size(), host
}
