package chains

import (
	"fmt"
	"strings"
)

// findParent tries the places child's header names for its parent, in
// the order candidates gives: each is vetted against the allowed folders,
// then handed to try, which says why it is not the parent (why != ""),
// takes it (why == "", err == nil), or ends the search with an error.
// Open (through openParent) and the folder scan (linkMeta) both resolve
// links with it, so both find the same parent.
func findParent(childPath string, child metadata, conf *confinement, try func(cand candidate, real string) (why string, err error)) error {
	h := child.Header()
	cands, err := candidates(childPath, child, conf.dirs)
	if err != nil {
		return err
	}
	var tried []string
	for _, cand := range cands {
		real, err := conf.vet(cand)
		if err != nil {
			return fmt.Errorf("%s: %w", childPath, err)
		}
		if real == "" {
			tried = append(tried, fmt.Sprintf("%s %s: no such file", cand.from, cand.path))
			continue
		}
		why, err := try(cand, real)
		if err != nil {
			return err
		}
		if why == "" {
			return nil
		}
		tried = append(tried, fmt.Sprintf("%s %s: %s", cand.from, real, why))
	}
	if len(tried) == 0 {
		tried = append(tried, "the child names no parent path that exists on this machine")
	}
	return fmt.Errorf("%s: %w (parent %q, UUID %s); tried:\n  %s\nre-link it with vhd set-parent %s PARENT", childPath, ErrParentNotFound, h.ParentName, h.ParentUUID, strings.Join(tried, "\n  "), childPath)
}
