package service

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"vhdkit/chains"
)

// What each control request does to the host, once decoded and checked
// (control_api.go). Every live operation claims its export first (busy
// otherwise), so two never run on one chain at once, and no export is
// removed under a running one.

// liveChain finds export name and its chain, for a live operation.
func (cs *controlServer) liveChain(name string) (*Export, *chains.Chain, *APIError) {
	ex, ok := cs.host.LookupExport(name)
	if !ok {
		return nil, nil, noExport(name)
	}
	c, ok := ex.Disk.(*chains.Chain)
	if !ok {
		return nil, nil, apiErr(CodeReadOnly, fmt.Sprintf("export %q is not a chain: its layers cannot change", name))
	}
	return ex, c, nil
}

// writableChain is liveChain for an operation that changes the layers:
// the export must be writable, and not on an undo disk unless undo.
func (cs *controlServer) writableChain(name string, undo bool) (*Export, *chains.Chain, *APIError) {
	ex, c, aerr := cs.liveChain(name)
	switch {
	case aerr != nil:
		return nil, nil, aerr
	case c.ReadOnly():
		return nil, nil, apiErr(CodeReadOnly, fmt.Sprintf("export %q is read-only: its layers do not change", name))
	case undo && !ex.Undo:
		return nil, nil, apiErr(CodeNoUndo, fmt.Sprintf("export %q is not served on an undo disk ('vhd serve --undo', or 'vhd ctl PATH add NAME IMAGE --undo'): there is nothing to commit or discard", name))
	case !undo && ex.Undo:
		return nil, nil, apiErr(CodeRefused, fmt.Sprintf("export %q is served on an undo disk: it changes by 'vhd ctl PATH undo commit|discard %s' only", name, name))
	}
	return ex, c, nil
}

// snapshot cuts a new top under export name.
func (cs *controlServer) snapshot(name string, req SnapshotRequest) (ExportStatus, *APIError) {
	newTop, aerr := absFile("new_top", req.NewTop, false)
	if aerr != nil {
		return ExportStatus{}, aerr
	}
	ex, c, aerr := cs.writableChain(name, false)
	if aerr != nil {
		return ExportStatus{}, aerr
	}
	release, aerr := cs.claim(ex, "a snapshot")
	if aerr != nil {
		return ExportStatus{}, aerr
	}
	defer release()
	if err := c.Snapshot(newTop); err != nil {
		return ExportStatus{}, classify(err)
	}
	cs.log.Info("vhd: live snapshot", "export", name, "new_top", newTop)
	return cs.exportStatus(ex), nil
}

// merge starts a job folding a layer of export name (the top if
// req.Layer is empty) into its parent.
func (cs *controlServer) merge(name string, req MergeRequest) (Job, *APIError) {
	layer, aerr := absFile("layer", req.Layer, true)
	if aerr != nil {
		return Job{}, aerr
	}
	ex, c, aerr := cs.writableChain(name, false)
	if aerr != nil {
		return Job{}, aerr
	}
	layers := c.Layers()
	i := 0
	if layer != "" {
		if i, aerr = findLayer(name, layers, layer); aerr != nil {
			return Job{}, aerr
		}
	}
	if i == len(layers)-1 {
		return Job{}, apiErr(CodeRefused, fmt.Sprintf("%s is the base of export %q: it has no parent to merge into", layers[i].Path, name))
	}
	merged := layerPath(layers[i])
	return cs.startJob(JobMerge, ex, merged, func(ctx context.Context, progress func(int64, int64)) (*chains.MergeResult, error) {
		return c.Merge(ctx, layer, progress)
	})
}

// undoCommit starts a job committing export name's undo disk.
func (cs *controlServer) undoCommit(name string) (Job, *APIError) {
	ex, c, aerr := cs.writableChain(name, true)
	if aerr != nil {
		return Job{}, aerr
	}
	return cs.startJob(JobUndoCommit, ex, layerPath(c.Layers()[0]), func(ctx context.Context, progress func(int64, int64)) (*chains.MergeResult, error) {
		return c.UndoCommit(ctx, progress)
	})
}

// jobWhat names a job kind in a busy refusal.
var jobWhat = map[string]string{JobMerge: "a merge", JobUndoCommit: "an undo commit"}

// startJob runs fn as a job holding export ex's claim.
func (cs *controlServer) startJob(kind string, ex *Export, layer string, fn func(context.Context, func(int64, int64)) (*chains.MergeResult, error)) (Job, *APIError) {
	name := ex.Name
	j, err := cs.jobs.start(jobSpec{kind: kind, export: name, layer: layer,
		claim: func(id int64) (func(), error) {
			release, aerr := cs.claimJob(ex, jobWhat[kind], id)
			if aerr != nil {
				return nil, aerr
			}
			return release, nil
		},
		run: func(ctx context.Context, progress func(int64, int64)) (*chains.MergeResult, error) {
			res, err := fn(ctx, progress)
			cs.log.Info("vhd: live "+kind+" ended", "export", name, "layer", layer, "err", err)
			if res != nil {
				res = &chains.MergeResult{Target: absOr(res.Target), Removed: absAll(res.Removed), Relinked: absAll(res.Relinked), Copied: res.Copied}
			}
			return res, err
		},
	})
	if err != nil {
		return Job{}, classify(err)
	}
	return j.snapshot(), nil
}

// undoDiscard drops what export name's undo disk holds.
func (cs *controlServer) undoDiscard(name string) (ExportStatus, *APIError) {
	ex, c, aerr := cs.writableChain(name, true)
	if aerr != nil {
		return ExportStatus{}, aerr
	}
	release, aerr := cs.claim(ex, "an undo discard")
	if aerr != nil {
		return ExportStatus{}, aerr
	}
	defer release()
	if err := c.UndoDiscard(); err != nil {
		return ExportStatus{}, classify(err)
	}
	return cs.exportStatus(ex), nil
}

// findLayer finds path among layers: the same path, or the same file.
func findLayer(name string, layers []chains.Layer, path string) (int, *APIError) {
	want, err := os.Stat(path)
	for i, l := range layers {
		if l.Path == path {
			return i, nil
		}
		if got, gerr := os.Stat(l.Path); err == nil && gerr == nil && os.SameFile(got, want) {
			return i, nil
		}
	}
	return 0, apiErr(CodeNotFound, fmt.Sprintf("%s is not a layer of export %q: 'vhd ctl PATH status' lists its layers", path, name))
}

// remove stops serving export name and closes it.
func (cs *controlServer) remove(ctx context.Context, name string) *APIError {
	if aerr := cs.refuseGuestDisk(name); aerr != nil {
		return aerr
	}
	ex, ok := cs.host.LookupExport(name)
	if !ok {
		return noExport(name)
	}
	release, aerr := cs.claim(ex, "a removal")
	if aerr != nil {
		return aerr
	}
	defer release()
	if err := cs.host.RemoveExport(ctx, name); err != nil {
		return classify(err)
	}
	cs.log.Info("vhd: export removed", "export", name)
	return nil
}

// exportStatus describes ex now.
func (cs *controlServer) exportStatus(ex *Export) ExportStatus {
	st := ExportStatus{
		Name: ex.Name, Description: ex.Description, URIs: cs.host.ExportURIs(ex.Name),
		Layers: []string{}, ReadOnly: ex.Disk.ReadOnly(), Undo: ex.Undo, ViewOf: ex.ViewOf,
		FUSE: ex.Mountpoint, Job: cs.busyJob(ex.Name),
	}
	// A chain, or a view wrapped to list its changes (a backup's).
	if c, ok := ex.Disk.(interface{ Layers() []chains.Layer }); ok {
		for _, l := range c.Layers() {
			st.Layers = append(st.Layers, layerPath(l))
		}
	}
	if ne, ok := cs.host.nbd.LookupExport(ex.Name); ok {
		st.NBD = ne.Stats()
	}
	return st
}

// status describes everything served.
func (cs *controlServer) status() Status {
	st := Status{PID: os.Getpid(), Control: cs.path, Exports: []ExportStatus{}, FUSEMounts: []string{}, Jobs: cs.jobs.list(), Backups: cs.runningBackups()}
	for _, name := range cs.host.ExportNames() {
		ex, ok := cs.host.LookupExport(name)
		if !ok {
			continue // removed meanwhile
		}
		es := cs.exportStatus(ex)
		st.Exports = append(st.Exports, es)
		if es.FUSE != "" {
			st.FUSEMounts = append(st.FUSEMounts, es.FUSE)
		}
	}
	sort.Strings(st.FUSEMounts)
	return st
}

// layerPath is a layer's path for clients: absolute (the top's is as the
// image was given, relative to this process's folder).
func layerPath(l chains.Layer) string { return absOr(l.Path) }

// absAll is every path of ps made absolute, in a new list (never null).
func absAll(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = absOr(p)
	}
	return out
}

// absOr is p made absolute, or p if that fails.
func absOr(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// description names an image in NBD listings and messages.
func description(path string) string { return filepath.Base(path) }

// lockedHint adds, to a refusal to open an image this process serves,
// how to export it instead: a frozen layer as a view, the top not at all.
func (cs *controlServer) lockedHint(image string, err error) *APIError {
	aerr := classify(err)
	for _, name := range cs.host.ExportNames() {
		ex, _ := cs.host.LookupExport(name)
		if ex == nil {
			continue
		}
		c, ok := ex.Disk.(*chains.Chain)
		if !ok {
			continue
		}
		if i, e := findLayer(name, c.Layers(), image); e == nil {
			aerr.Message = fmt.Sprintf("%s is layer %d of export %q, served here: export a frozen layer read-only with 'vhd ctl PATH add NAME --view-of %s --layer %s' (%s)", image, i+1, name, name, image, oneLine(err.Error()))
			break
		}
	}
	return aerr
}
