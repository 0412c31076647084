package chains

import (
	"errors"
	"fmt"
	"strings"
)

// An image's dependents are the differencing images whose parent link
// leads to it. The UUID a child records only says which image it was made
// over; copies of that image (cp, a backup restored beside it) share the
// UUID, and a child made over the original does not depend on the copy.
// So a child recording the UUID counts only when its link, resolved as
// Open resolves it (findParent, the same candidates, metadata only),
// leads to the very file (device and inode), or when it cannot be
// resolved at all: then it may be the image's child, moved, and is
// counted, saying so.

// Dependent is a differencing image that depends on an image.
type Dependent struct {
	Path string
	// Unresolved says why the image's parent link cannot be followed,
	// when it records the UUID but where it leads is unknown; "" when it
	// leads to the image.
	Unresolved string
}

func (d Dependent) String() string {
	if d.Unresolved == "" {
		return d.Path
	}
	return fmt.Sprintf("%s (it records this image's UUID, but its parent link does not resolve: %s)", d.Path, d.Unresolved)
}

// joinDependents lists ds for a message.
func joinDependents(ds []Dependent) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, ", ")
}

// dependentOf judges child, which records the UUID of the image at
// target: ok is false when its link leads to another file (a copy with
// the same UUID). The link is followed whatever the parent's time or an
// unfinished merge in it: a stale child still sits on that parent.
func dependentOf(child, target string, conf *confinement, metas metaCache) (d Dependent, ok bool) {
	d.Path = child
	m, err := metas.read(child)
	if err != nil {
		d.Unresolved = firstLine(err.Error())
		return d, true
	}
	found, err := linkMeta(child, m, conf, Options{AcceptModifiedParent: true, ignoreMerges: true}, metas)
	if err != nil {
		d.Unresolved = unresolvedWhy(child, err)
		return d, true
	}
	a, errA := idOf(found)
	b, errB := idOf(target)
	if errA != nil || errB != nil {
		d.Unresolved = fmt.Sprintf("it leads to %s, which cannot be compared with this image", found)
		return d, true
	}
	return d, a == b
}

// unresolvedWhy is why child's link could not be followed, short: the
// list of places tried belongs to 'vhd tree', not to every refusal.
func unresolvedWhy(child string, err error) string {
	if errors.Is(err, ErrParentNotFound) {
		return ErrParentNotFound.Error()
	}
	return brokenReason(child, err)
}

// resolveDependents keeps, of cands (images recording the UUID of the
// image at target), those that depend on it.
func resolveDependents(cands []string, target string, allowed []string) ([]Dependent, error) {
	conf, err := newConfinement(allowed)
	if err != nil {
		return nil, err
	}
	metas := metaCache{}
	var out []Dependent
	for _, c := range cands {
		if d, ok := dependentOf(c, target, conf, metas); ok {
			out = append(out, d)
		}
	}
	return out, nil
}
