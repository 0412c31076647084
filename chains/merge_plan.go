package chains

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// A merge of child into target (layers[k]) deletes layers[0..k-1] and
// changes the target, so every other image that depends on one of them
// is looked at before anything is written:
//
//   - a child of the merged child (layers[0]) is moved onto the target:
//     it read itself over layers[0..k-1] over the target, which is
//     exactly what the target holds after the merge (Hyper-V does the
//     same when it deletes a checkpoint in the middle of a tree);
//   - a child of a layer in between (layers[1..k-1]) is refused: moved
//     onto the target it would see the data of the layers above its own
//     parent, and left alone it would lose its parent;
//   - an undo disk of any of them is refused, --force or not: it holds
//     writes meant for that layer, to be committed or discarded first;
//   - another child of the target is refused unless Force: the target's
//     data changes under it. Force leaves it in place, now invalid (its
//     recorded parent timestamp no longer matches), and deletes nothing
//     it needs.
//
// Dependents are found as Dependents finds them: by the parent UUID they
// record, in the folders of the chain's layers (and subfolders) and the
// allowed folders, kept when their link leads to the layer or cannot be
// followed (dependentOf).

// blocker is an image that stops a merge, and why.
type blocker struct {
	path, why string
	forceable bool // only the target's own children
}

// planMerge returns the children to move onto the target, or the images
// that stop the merge (ErrHasChildren).
func planMerge(c *Chain, k int, opts MergeOptions) ([]string, error) {
	var dirs, exclude []string
	for i, l := range c.layers[:k+1] {
		dirs = append(dirs, filepath.Dir(l.Path))
		if i < k {
			exclude = append(exclude, l.Path)
		}
	}
	dirs = append(dirs, opts.Open.ParentDirs...)
	slices.Sort(dirs)
	byParent, err := childrenByParent(slices.Compact(dirs), exclude)
	if err != nil {
		return nil, err
	}
	conf, err := newConfinement(opts.Open.ParentDirs)
	if err != nil {
		return nil, err
	}
	metas := metaCache{}
	var relink []string
	var stop []blocker
	for i, l := range c.layers[:k+1] {
		for _, p := range byParent[l.Image.Footer().UUID] {
			d, ok := dependentOf(p, l.Path, conf, metas)
			if !ok {
				continue // it sits on another image with that UUID (a copy)
			}
			switch b := judgeDependent(c, k, i, d, opts); {
			case b == nil:
				relink = append(relink, d.Path)
			case !b.forceable || !opts.Force:
				stop = append(stop, *b)
			}
		}
	}
	if len(stop) > 0 {
		return nil, mergeRefusal(c, k, stop)
	}
	return relink, nil
}

// judgeDependent decides about d, a child of layer i: nil means it is
// moved onto the target.
func judgeDependent(c *Chain, k, i int, dep Dependent, opts MergeOptions) *blocker {
	layer, target, d := c.layers[i].Path, c.layers[k].Path, dep.Path
	switch {
	case absPath(d) == absPath(UndoPath(layer)):
		return &blocker{d, fmt.Sprintf("the undo disk of %s, which the merge changes or deletes: commit or discard it first (vhd undo commit|discard %s)", layer, layer), false}
	case dep.Unresolved != "":
		return &blocker{d, fmt.Sprintf("it records %s's UUID, but its parent link does not resolve: %s", layer, dep.Unresolved), i == k}
	case i == k:
		return &blocker{d, fmt.Sprintf("a child of %s, whose data the merge changes", target), true}
	case i > 0:
		return &blocker{d, fmt.Sprintf("a child of %s, which the merge deletes; on %s it would see the data of %s", layer, target, c.layers[0].Path), false}
	}
	if err := linksTo(d, layer, opts.Open); err != nil {
		return &blocker{d, fmt.Sprintf("its link leads to %s but does not hold (%s)", layer, firstLine(err.Error())), false}
	}
	return nil
}

// linksTo reports (nil) whether child's parent link resolves to the file
// at parent, with Open's rules.
func linksTo(child, parent string, opts Options) error {
	conf, err := newConfinement(opts.ParentDirs)
	if err != nil {
		return err
	}
	m, err := readMeta(child)
	if err != nil {
		return err
	}
	got, err := linkMeta(child, m, conf, opts, metaCache{})
	if err != nil {
		return err
	}
	a, errA := idOf(got)
	b, errB := idOf(parent)
	if errA != nil || errB != nil || a != b {
		return fmt.Errorf("it leads to %s", got)
	}
	return nil
}

// mergeRefusal names every image that stops the merge and what to do.
func mergeRefusal(c *Chain, k int, stop []blocker) error {
	var list []string
	forceable := true
	for _, b := range stop {
		list = append(list, fmt.Sprintf("%s (%s)", b.path, b.why))
		forceable = forceable && b.forceable
	}
	what := "delete those no longer needed first"
	if forceable {
		what += ", or merge anyway with 'vhd merge --force', leaving them invalid"
	}
	msg := fmt.Sprintf("merging %s into %s would break %s; nothing was changed: %s", c.layers[0].Path, c.layers[k].Path, strings.Join(list, "; "), what)
	return &refusedError{msg: msg, kind: ErrHasChildren}
}
