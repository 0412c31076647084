package chains

import (
	"errors"
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
	Broken   string  `json:"broken,omitempty"`
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
// returns the roots of the forest: base images, and children whose
// parent could not be linked (marked Broken).
func Scan(dirs []string, opts Options) ([]*Node, error) {
	paths, err := findImages(dirs)
	if err != nil {
		return nil, err
	}
	conf, err := newConfinement(opts.ParentDirs)
	if err != nil {
		return nil, err
	}
	nodes := map[string]*Node{}
	for _, p := range paths {
		nodes[p] = scanOne(p, conf, opts)
	}
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

// scanOne reads one image's metadata and resolves its parent link.
func scanOne(path string, conf *confinement, opts Options) *Node {
	n := &Node{Path: path}
	img, err := engine.Open(path, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		n.Error = err.Error()
		return n
	}
	defer img.Close()
	ft := img.Footer()
	n.Type, n.UUID, n.Size = ft.DiskType.String(), ft.UUID.String(), img.Size()
	if ft.DiskType != engine.TypeDifferencing {
		return n
	}
	h := img.Header()
	n.ParentUUID, n.ParentName = h.ParentUUID.String(), h.ParentName
	o := opts
	o.NoLock, o.ReadOnly = true, true
	p, err := openParent(Layer{Image: img, Path: path}, conf, o, map[fileID]string{})
	if err != nil {
		n.Broken = brokenReason(err)
		return n
	}
	defer p.Image.Close()
	n.Parent = absPath(p.Path)
	return n
}

func brokenReason(err error) string {
	for _, e := range []error{ErrParentModified, ErrParentMismatch, ErrOutsideAllowed, ErrNotRegular, ErrParentNotFound, ErrCycle} {
		if errors.Is(err, e) {
			return e.Error() + ": " + firstLine(err.Error())
		}
	}
	return firstLine(err.Error())
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Dependents lists the differencing images that record uuid as their
// parent, found in the folder of targetPath (and its subfolders) and in
// the allowed folders, leaving out the paths in exclude.
func Dependents(uuid engine.UUID, targetPath string, exclude, allowed []string) ([]string, error) {
	dirs := append([]string{filepath.Dir(targetPath)}, allowed...)
	paths, err := findImages(dirs)
	if err != nil {
		return nil, err
	}
	skip := map[string]bool{}
	for _, e := range exclude {
		skip[absPath(e)] = true
	}
	var deps []string
	for _, p := range paths {
		if skip[p] {
			continue
		}
		img, err := engine.Open(p, engine.Options{ReadOnly: true, NoLock: true})
		if err != nil {
			continue
		}
		if h := img.Header(); h != nil && img.Type() == engine.TypeDifferencing && h.ParentUUID == uuid {
			deps = append(deps, p)
		}
		img.Close()
	}
	return deps, nil
}
