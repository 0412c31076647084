package chains

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"vhdkit/engine"
)

// Node is one image found by Scan, with its link to its parent.
type Node struct {
	Path string `json:"path"`
	Type string `json:"type"`
	UUID string `json:"uuid"`
	Size int64  `json:"virtual_size"`
	// Parent is the parent's path when the link resolves.
	Parent string `json:"parent,omitempty"`
	// ParentUUID is what a differencing image records.
	ParentUUID string `json:"parent_uuid,omitempty"`
	ParentName string `json:"parent_name,omitempty"`
	// Broken says why the link to the parent does not hold: parent
	// missing, UUID or timestamp mismatch, outside the allowed folders.
	Broken string `json:"broken,omitempty"`
	// Tried lists, when the parent was not found, where it was looked
	// for and what was there.
	Tried []string `json:"tried,omitempty"`
	// Found is, when the parent was not found, a scanned image with the
	// UUID the child records: what to re-link it to.
	Found string `json:"parent_found,omitempty"`
	// FoundModified says, when Found was written after the child was
	// made (its time fails Open's check), so and with which times: it is
	// then offered only with --accept-modified-parent.
	FoundModified string `json:"parent_found_modified,omitempty"`
	// Merge says that a merge out of or into this image did not finish,
	// and how to finish it.
	Merge    string  `json:"merge_interrupted,omitempty"`
	Error    string  `json:"error,omitempty"`
	Children []*Node `json:"children,omitempty"`
}

// imageExts are the file extensions Scan looks at.
var imageExts = []string{".vhd", ".vud", ".avhd"}

func isImageName(name string) bool {
	return slices.Contains(imageExts, strings.ToLower(filepath.Ext(name)))
}

// findImages walks dirs (not following symlinked folders) for regular
// files with an image extension.
func findImages(dirs []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if p == d {
					return err
				}
				return nil // unreadable subfolder: skip it
			}
			if e.Type().IsRegular() && isImageName(e.Name()) {
				if abs := absPath(p); !seen[abs] {
					seen[abs] = true
					out = append(out, abs)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.Sort(out)
	return out, nil
}

// Scan finds every image under dirs and links children to parents, with
// the same rules Open uses (allowed folders from opts.ParentDirs). It
// returns the roots of the forest: base images, children whose parent
// could not be linked, and images whose parents form a cycle (both
// marked Broken). Each image is read as far as its footer, dynamic
// header and parent locators (readMeta), never its BAT: a folder of
// large or hostile images is scanned in bounded time and memory.
func Scan(dirs []string, opts Options) ([]*Node, error) {
	paths, err := findImages(dirs)
	if err != nil {
		return nil, err
	}
	conf, err := newConfinement(opts.ParentDirs)
	if err != nil {
		return nil, err
	}
	metas := metaCache{}
	nodes := map[string]*Node{}
	for _, p := range paths {
		nodes[p] = scanOne(p, conf, opts, metas)
	}
	markCycles(nodes, paths)
	pointAtMovedParents(nodes, paths, metas)
	var roots []*Node
	for _, p := range paths {
		n := nodes[p]
		if parent := nodes[n.Parent]; n.Parent != "" && parent != nil && n.Broken == "" {
			parent.Children = append(parent.Children, n)
		} else {
			roots = append(roots, n)
		}
	}
	return roots, nil
}

// metaCache holds what readMeta found for each path: scans read each
// image once, as a node and as the parent of its children.
type metaCache map[string]metaResult

type metaResult struct {
	m   *imageMeta
	err error
}

func (mc metaCache) read(path string) (*imageMeta, error) {
	if r, ok := mc[path]; ok {
		return r.m, r.err
	}
	m, err := readMeta(path)
	mc[path] = metaResult{m, err}
	return m, err
}

// scanOne reads one image's metadata and resolves its parent link.
func scanOne(path string, conf *confinement, opts Options, metas metaCache) *Node {
	n := &Node{Path: path}
	m, err := metas.read(path)
	if err != nil {
		n.Error = err.Error()
		return n
	}
	ft := m.Footer()
	n.Type, n.UUID, n.Size = ft.DiskType.String(), ft.UUID.String(), m.Size()
	if note, err := mergeNote(path); err != nil {
		n.Merge = err.Error()
	} else {
		n.Merge = note
	}
	if ft.DiskType != engine.TypeDifferencing {
		return n
	}
	h := m.Header()
	n.ParentUUID, n.ParentName = h.ParentUUID.String(), h.ParentName
	parent, err := linkMeta(path, m, conf, opts, metas)
	var nf *ParentNotFoundError
	if errors.As(err, &nf) {
		n.Broken, n.Tried = ErrParentNotFound.Error(), nf.TriedLines()
		return n
	}
	if err != nil {
		n.Broken = brokenReason(path, err)
		return n
	}
	n.Parent = absPath(parent)
	return n
}

// linkMeta finds the parent of the image at path (read into m) as
// openParent does, judging each candidate by its metadata alone.
func linkMeta(path string, m *imageMeta, conf *confinement, opts Options, metas metaCache) (string, error) {
	var found string
	ft := m.Footer()
	raw := engine.ParentIsRaw(&ft, m.Header())
	err := findParent(path, m, conf, func(cand candidate, real string) (string, error) {
		if raw {
			// A raw disk image (blktap's vhd-util snapshot -m): no UUID
			// to read; its file time is what the child recorded.
			pm, err := rawMeta(real)
			if err == nil {
				err = linkHolds(path, m, real, pm, opts)
			}
			found = real
			return "", err
		}
		pm, err := metas.read(real)
		if errors.Is(err, engine.ErrCorrupt) {
			return fmt.Sprintf("not a usable VHD (%v)", err), nil
		}
		if err != nil {
			return "", fmt.Errorf("%s: parent via %s: %w", path, cand.from, err)
		}
		if got, want := pm.Footer().UUID, m.Header().ParentUUID; got != want {
			return fmt.Sprintf("UUID %s, the child expects %s", got, want), nil
		}
		if err := linkHolds(path, m, real, pm, opts); err != nil {
			return "", err
		}
		found = real
		return "", nil
	})
	return found, err
}

// rawMeta is what a raw parent's metadata amounts to: a fixed disk of
// the file's size, without UUID or timestamp (engine.OpenRawParent).
func rawMeta(path string) (*imageMeta, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size() / engine.SectorSize * engine.SectorSize
	return &imageMeta{footer: engine.Footer{DiskType: engine.TypeFixed, CurrentSize: uint64(size)}}, nil
}

// markCycles marks Broken every image whose parent links lead back to
// itself: linked as found, they would hang off each other and from no
// root, and the scan would not show them at all.
func markCycles(nodes map[string]*Node, paths []string) {
	const (
		unseen = iota
		onPath
		done
	)
	state := map[*Node]int{}
	for _, p := range paths {
		var walk []*Node
		for n := nodes[p]; n != nil; n = nodes[n.Parent] {
			if state[n] == onPath {
				markCycle(walk[slices.Index(walk, n):])
				break
			}
			if state[n] == done {
				break
			}
			state[n] = onPath
			walk = append(walk, n)
			if n.Broken != "" || n.Parent == "" {
				break
			}
		}
		for _, x := range walk {
			state[x] = done
		}
	}
}

// markCycle marks the images of one cycle, naming them in link order.
func markCycle(cycle []*Node) {
	names := make([]string, 0, len(cycle)+1)
	for _, n := range cycle {
		names = append(names, n.Path)
	}
	names = append(names, cycle[0].Path)
	why := fmt.Sprintf("%s: %s; re-link one of them with vhd set-parent", ErrCycle, strings.Join(names, " -> "))
	for _, n := range cycle {
		n.Broken = why
	}
}

// brokenReason is why the link of the image at path does not hold, as
// one line that starts with the kind of break and does not repeat the
// image's path (the tree shows it).
func brokenReason(path string, err error) string {
	msg := strings.TrimPrefix(firstLine(err.Error()), path+": ")
	if errors.Is(err, ErrMergeInterrupted) {
		return msg
	}
	for _, e := range []error{ErrParentModified, ErrParentMismatch, ErrOutsideAllowed, ErrNotRegular, ErrParentNotFound, ErrCycle} {
		if errors.Is(err, e) && !strings.Contains(msg, e.Error()) {
			return e.Error() + ": " + msg
		}
	}
	return msg
}

// pointAtMovedParents fills Found of every image whose parent was not
// found with a scanned image that has the UUID it records: the parent
// moved or was renamed, and re-linking the child to it mends the link,
// unless it was written after the child was made (FoundModified).
func pointAtMovedParents(nodes map[string]*Node, paths []string, metas metaCache) {
	byUUID := map[string]string{}
	for _, p := range paths {
		if n := nodes[p]; n.Error == "" && n.UUID != "" {
			if _, dup := byUUID[n.UUID]; !dup {
				byUUID[n.UUID] = p
			}
		}
	}
	for _, p := range paths {
		n := nodes[p]
		if n.Tried == nil || n.ParentUUID == (engine.UUID{}).String() {
			continue
		}
		if f, ok := byUUID[n.ParentUUID]; ok && f != p {
			n.Found = f
			cm, cerr := metas.read(p)
			fm, ferr := metas.read(f)
			if cerr == nil && ferr == nil {
				n.FoundModified = writtenAfter(p, cm, f, fm)
			}
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Dependents lists the differencing images that depend on the image at
// targetPath (UUID uuid), found in its folder (and subfolders) and in the
// allowed folders, leaving out the paths in exclude: those recording
// uuid whose link leads to targetPath or cannot be followed (see
// dependentOf). It reads each image's metadata only (see Scan).
func Dependents(uuid engine.UUID, targetPath string, exclude, allowed []string) ([]Dependent, error) {
	byParent, err := childrenByParent(append([]string{filepath.Dir(targetPath)}, allowed...), exclude)
	if err != nil {
		return nil, err
	}
	return resolveDependents(byParent[uuid], targetPath, allowed)
}

// childrenByParent maps each parent UUID to the differencing images
// under dirs that record it, leaving out the paths in exclude. Files that
// are not readable VHDs are skipped: nothing can depend through them.
func childrenByParent(dirs, exclude []string) (map[engine.UUID][]string, error) {
	paths, err := findImages(dirs)
	if err != nil {
		return nil, err
	}
	skip := map[string]bool{}
	for _, e := range exclude {
		skip[absPath(e)] = true
	}
	out := map[engine.UUID][]string{}
	for _, p := range paths {
		if skip[p] {
			continue
		}
		m, err := readMeta(p)
		if err != nil || m.Footer().DiskType != engine.TypeDifferencing {
			continue
		}
		u := m.Header().ParentUUID
		out[u] = append(out[u], p)
	}
	return out, nil
}
