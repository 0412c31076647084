package chains

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"vhdkit/engine"
	"vhdkit/internal/shq"
)

// findParent tries the places child's header names for its parent, in
// the order candidates gives: each is vetted against the allowed folders,
// then handed to try, which says why it is not the parent (why != ""),
// takes it (why == "", err == nil), or ends the search with an error.
// Open (through openParent) and the folder scan (linkMeta) both resolve
// links with it, so both find the same parent. When no candidate is the
// parent the error is a *ParentNotFoundError listing what was tried.
func findParent(childPath string, child metadata, conf *confinement, try func(cand candidate, real string) (why string, err error)) error {
	h := child.Header()
	cands, err := candidates(childPath, child, conf.dirs)
	if err != nil {
		return err
	}
	nf := &ParentNotFoundError{Child: childPath, Name: h.ParentName, UUID: h.ParentUUID}
	for _, cand := range cands {
		real, err := conf.vet(cand)
		if err != nil {
			return fmt.Errorf("%s: %w", childPath, err)
		}
		if real == "" {
			nf.Tried = append(nf.Tried, Attempt{From: cand.from, Path: absPath(cand.path), Why: "no such file"})
			continue
		}
		why, err := try(cand, real)
		if err != nil {
			return err
		}
		if why == "" {
			return nil
		}
		nf.Tried = append(nf.Tried, Attempt{From: cand.from, Path: real, Why: why})
	}
	return nf
}

// Attempt is one place findParent looked for a parent, and why the file
// there (if any) was not it.
type Attempt struct {
	From string // "W2ru locator", "parent name", ...
	Path string
	Why  string
}

// ParentNotFoundError says that none of the places a differencing image
// names led to its parent, what each held, and, when one was found
// elsewhere, an image with the UUID the child records. It matches
// ErrParentNotFound.
type ParentNotFoundError struct {
	Child string
	Name  string      // the parent name the child records
	UUID  engine.UUID // the parent UUID the child records
	Tried []Attempt
	// Found is an image with the recorded UUID that none of the child's
	// locators names (a moved or renamed parent), or "".
	Found string
	// FoundModified says, when Found fails the time check (writtenAfter),
	// that it was written after the child was made; "" when it passes.
	FoundModified string
}

func (e *ParentNotFoundError) Unwrap() error { return ErrParentNotFound }

func (e *ParentNotFoundError) Error() string { return e.Child + ": " + e.Reason() }

// Reason is the error without the child's path: one line saying what the
// child records, where it was looked for and what to do.
func (e *ParentNotFoundError) Reason() string {
	return fmt.Sprintf("%s: the child records %q (UUID %s); %s; %s", ErrParentNotFound, e.Name, e.UUID, strings.Join(e.TriedLines(), "; "), e.Advice())
}

// TriedLines says where the parent was looked for, a line per file: the
// locators and names that led to the same file, with the same outcome,
// share a line.
func (e *ParentNotFoundError) TriedLines() []string {
	if len(e.Tried) == 0 {
		return []string{"it names no parent path that exists on this machine"}
	}
	type group struct {
		path, why string
		from      []string
	}
	var groups []*group
	for _, a := range e.Tried {
		var g *group
		for _, x := range groups {
			if x.path == a.Path && x.why == a.Why {
				g = x
			}
		}
		if g == nil {
			g = &group{path: a.Path, why: a.Why}
			groups = append(groups, g)
		}
		g.from = append(g.from, a.From)
	}
	lines := make([]string, len(groups))
	for i, g := range groups {
		lines[i] = fmt.Sprintf("tried %s (%s): %s", g.path, strings.Join(g.from, ", "), g.why)
	}
	return lines
}

// Advice is what to do: re-link to the image found with the right UUID,
// or to one the user finds. A found image written after the child was
// made is offered only with --accept-modified-parent, saying so.
func (e *ParentNotFoundError) Advice() string {
	if e.Found != "" && e.FoundModified != "" {
		return fmt.Sprintf("%s has that UUID but %s; only if you know its data did not change, re-link the child with 'vhd set-parent --accept-modified-parent %s %s'", e.Found, e.FoundModified, shq.Quote(e.Child), shq.Quote(e.Found))
	}
	if e.Found != "" {
		return fmt.Sprintf("%s has that UUID: re-link the child with vhd set-parent %s %s", e.Found, shq.Quote(e.Child), shq.Quote(e.Found))
	}
	return fmt.Sprintf("find the parent (vhd tree FOLDER shows every image's UUID) and re-link the child with vhd set-parent %s PARENT", shq.Quote(e.Child))
}

// lookForMoved fills Found (and FoundModified) of e, the parent of child
// not found where it names it, with an image in dirs with its UUID.
func (e *ParentNotFoundError) lookForMoved(dirs []string, child metadata) {
	e.Found = findByUUID(dirs, e.UUID, absPath(e.Child))
	if e.Found == "" {
		return
	}
	if m, err := readMeta(e.Found); err == nil {
		e.FoundModified = writtenAfter(e.Child, child, e.Found, m)
	}
}

// maxUUIDSearch bounds how many files of one folder findByUUID reads.
const maxUUIDSearch = 1000

// findByUUID looks in dirs (not their subfolders) for a VHD whose UUID is
// u, reading only each file's metadata, at most maxUUIDSearch image
// files per folder: a parent that moved or was renamed beside its child
// or into an allowed folder is found, and a huge folder costs bounded
// time. It returns the path found, or "".
func findByUUID(dirs []string, u engine.UUID, skip string) string {
	if u == (engine.UUID{}) {
		return "" // a raw parent: nothing to match
	}
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		read := 0
		for _, ent := range entries {
			if !ent.Type().IsRegular() || !isImageName(ent.Name()) {
				continue
			}
			if read++; read > maxUUIDSearch {
				break
			}
			p := absPath(filepath.Join(d, ent.Name()))
			if p == skip {
				continue
			}
			if m, err := readMeta(p); err == nil && m.Footer().UUID == u {
				return p
			}
		}
	}
	return ""
}
