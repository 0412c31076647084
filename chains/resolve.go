package chains

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"vhdkit/engine"
)

// ParentPathEnv names the environment variable that, like --parent-dir,
// confines parents to a colon-separated list of folders.
const ParentPathEnv = "VHD_PARENT_PATH"

// ParentDirsFromEnv returns the folders VHD_PARENT_PATH lists.
func ParentDirsFromEnv() []string {
	var dirs []string
	for _, d := range strings.Split(os.Getenv(ParentPathEnv), ":") {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// candidate is one place a child says its parent may be.
type candidate struct {
	from string // "W2ru locator", "parent name", ...
	path string
}

// candidates lists where to look for the parent of the differencing image
// child (opened from childPath), in order: the relative Windows locator
// (W2ru, against the child's folder), the absolute ones (W2ku when it is
// not a drive-letter path, MacX), then the parent's file name in the
// child's folder and in each allowed folder.
func candidates(childPath string, child metadata, allowed []string) ([]candidate, error) {
	locs, err := child.ParentLocators()
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(childPath)
	var out []candidate
	add := func(code string) {
		for _, l := range locs {
			if l.Code != code || l.Path == "" {
				continue
			}
			if p, ok := localPath(code, l.Path, dir); ok {
				out = append(out, candidate{code + " locator", p})
			}
		}
	}
	add(engine.LocatorW2ru)
	add(engine.LocatorW2ku)
	add(engine.LocatorMacX)
	if name := baseName(child.Header().ParentName); name != "" {
		out = append(out, candidate{"parent name", filepath.Join(dir, name)})
		for _, a := range allowed {
			out = append(out, candidate{"parent name in " + a, filepath.Join(a, name)})
		}
	}
	return out, nil
}

// localPath turns a locator's path into a path on this machine, or says
// it has none: a drive-letter Windows path names another machine's disk.
func localPath(code, p, childDir string) (string, bool) {
	switch code {
	case engine.LocatorW2ru:
		p = strings.ReplaceAll(p, `\`, "/")
		if filepath.IsAbs(p) || hasDrive(p) {
			return "", false
		}
		return filepath.Join(childDir, p), true
	case engine.LocatorW2ku:
		if hasDrive(p) || strings.HasPrefix(p, `\\`) {
			return "", false
		}
		p = strings.ReplaceAll(p, `\`, "/")
	}
	if !filepath.IsAbs(p) {
		return "", false
	}
	return filepath.Clean(p), true
}

func hasDrive(p string) bool {
	return len(p) >= 2 && p[1] == ':' && (p[0]|0x20 >= 'a' && p[0]|0x20 <= 'z')
}

// baseName is the last element of a Windows or Unix path.
func baseName(p string) string {
	p = strings.ReplaceAll(p, `\`, "/")
	if i := strings.LastIndex(p, "/"); i >= 0 {
		p = p[i+1:]
	}
	if p == "." || p == ".." {
		return ""
	}
	return p
}

// confinement holds the allowed folders, resolved.
type confinement struct {
	dirs []string // absolute, symlinks resolved; empty: no confinement
}

func newConfinement(dirs []string) (*confinement, error) {
	c := &confinement{}
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil, fmt.Errorf("allowed parent folder %s: %w", d, err)
		}
		c.dirs = append(c.dirs, real)
	}
	return c, nil
}

func (c *confinement) active() bool { return len(c.dirs) > 0 }

// inside reports whether p (absolute, clean) lies in an allowed folder.
func (c *confinement) inside(p string) bool {
	for _, d := range c.dirs {
		if p == d || strings.HasPrefix(p, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// vet checks a candidate before anything is read from it: with allowed
// folders set, the path and the file it leads to (symlinks followed) must
// lie inside one. It returns the resolved path, or "" if there is no such
// file.
func (c *confinement) vet(cand candidate) (string, error) {
	abs, err := filepath.Abs(cand.path)
	if err != nil {
		return "", err
	}
	if c.active() && !c.inside(abs) {
		// Lexically outside: never even look at it.
		if real, err := filepath.EvalSymlinks(filepath.Dir(abs)); err != nil || !c.inside(filepath.Join(real, filepath.Base(abs))) {
			return "", fmt.Errorf("%s %s: %w (%s); allow its folder with --parent-dir or %s, or re-link the child with vhd set-parent", cand.from, cand.path, ErrOutsideAllowed, strings.Join(c.dirs, ", "), ParentPathEnv)
		}
	}
	real, err := filepath.EvalSymlinks(abs)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", cand.from, cand.path, err)
	}
	if c.active() && !c.inside(real) {
		return "", fmt.Errorf("%s %s leads to %s: %w (%s)", cand.from, cand.path, real, ErrOutsideAllowed, strings.Join(c.dirs, ", "))
	}
	return real, nil
}

// openRegular opens path read-only only if it is a regular file, checked
// on the open descriptor so the file cannot be swapped between check and
// open (engine.OpenChecked: O_NONBLOCK keeps a FIFO from blocking the
// open). O_NOFOLLOW refuses a symlink planted after vet resolved the path.
func openRegular(path string) (*os.File, error) {
	f, err := engine.OpenChecked(path, os.O_RDONLY|unix.O_NOFOLLOW, false)
	if errors.Is(err, engine.ErrNotFile) {
		return nil, fmt.Errorf("%w: %w", ErrNotRegular, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return f, nil
}
