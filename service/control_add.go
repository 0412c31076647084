package service

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/vhdfs"
)

// Exports added over the control socket: an image opened with its chain
// as vhd serve opens its own (ControlOptions.Chains), or a read-only view
// of a frozen layer of a served chain (the point a backup reads). Both
// are served over NBD and, under a FUSE root or at a folder the request
// names, over FUSE.

// add opens what req asks for and serves it.
func (cs *controlServer) add(ctx context.Context, req AddRequest) (ExportStatus, *APIError) {
	if aerr := checkName(req.Name); aerr != nil {
		return ExportStatus{}, aerr
	}
	if _, taken := cs.host.LookupExport(req.Name); taken {
		return ExportStatus{}, apiErr(CodeExists, fmt.Sprintf("an export named %q exists already: remove it first or choose another name", req.Name))
	}
	fuseDir, aerr := absFile("fuse", req.FUSE, true)
	if aerr != nil {
		return ExportStatus{}, aerr
	}
	var c *chains.Chain
	var opts ExportOptions
	switch {
	case (req.Image == "") == (req.ViewOf == ""):
		return ExportStatus{}, apiErr(CodeBadRequest, `give either "image" (an image to open) or "view_of" (an export whose frozen layer to show)`)
	case req.Image != "":
		c, opts, aerr = cs.openImage(req)
	default:
		c, opts, aerr = cs.openView(req)
	}
	if aerr != nil {
		return ExportStatus{}, aerr
	}
	opts.FUSE = cs.fuseOptions(req.Name, fuseDir, opts.Description, c.ReadOnly())
	ex, err := cs.host.AddExport(ctx, req.Name, c, opts)
	if err != nil {
		c.Close()
		return ExportStatus{}, classify(err)
	}
	cs.log.Info("vhd: export added", "export", req.Name, "image", req.Image, "view_of", req.ViewOf)
	return cs.exportStatus(ex), nil
}

// openImage opens req.Image with its chain: read-only, on its undo disk,
// or for writing.
func (cs *controlServer) openImage(req AddRequest) (*chains.Chain, ExportOptions, *APIError) {
	image, aerr := absFile("image", req.Image, false)
	if aerr != nil {
		return nil, ExportOptions{}, aerr
	}
	if req.Layer != "" {
		return nil, ExportOptions{}, apiErr(CodeBadRequest, `"layer" goes with "view_of" only`)
	}
	if req.ReadOnly && req.Undo {
		return nil, ExportOptions{}, apiErr(CodeBadRequest, `"read_only" and "undo" do not go together`)
	}
	o := cs.opts.Chains
	o.ReadOnly = req.ReadOnly
	var c *chains.Chain
	var err error
	if req.Undo {
		c, _, err = chains.OpenUndo(image, o)
	} else {
		c, err = chains.Open(image, o)
	}
	if errors.Is(err, engine.ErrLocked) {
		return nil, ExportOptions{}, cs.lockedHint(image, err)
	}
	if err != nil {
		return nil, ExportOptions{}, classify(err)
	}
	return c, ExportOptions{Description: description(image), Undo: req.Undo}, nil
}

// openView cuts a read-only view of a frozen layer of export
// req.ViewOf: req.Layer, or the newest frozen one (under the top of a
// writable chain; the top of a read-only one). The source export is
// claimed meanwhile, so no merge takes that layer away under the cut.
func (cs *controlServer) openView(req AddRequest) (*chains.Chain, ExportOptions, *APIError) {
	layer, aerr := absFile("layer", req.Layer, true)
	if aerr != nil {
		return nil, ExportOptions{}, aerr
	}
	if req.ReadOnly || req.Undo {
		return nil, ExportOptions{}, apiErr(CodeBadRequest, `"read_only" and "undo" go with "image": a view is always read-only`)
	}
	ex, src, aerr := cs.liveChain(req.ViewOf)
	if aerr != nil {
		return nil, ExportOptions{}, aerr
	}
	release, aerr := cs.claim(ex, "a view being cut")
	if aerr != nil {
		return nil, ExportOptions{}, aerr
	}
	defer release()
	if layer, aerr = frozenLayer(req.ViewOf, src, layer); aerr != nil {
		return nil, ExportOptions{}, aerr
	}
	v, err := src.View(layer)
	if err != nil {
		return nil, ExportOptions{}, apiErr(CodeRefused, oneLine(err.Error()))
	}
	return v, ExportOptions{Description: description(layer), ViewOf: req.ViewOf}, nil
}

// frozenLayer checks the layer a view is asked of, or picks the newest
// frozen one.
func frozenLayer(name string, src *chains.Chain, layer string) (string, *APIError) {
	layers := src.Layers()
	if layer != "" {
		if _, aerr := findLayer(name, layers, layer); aerr != nil {
			return "", aerr
		}
		return layer, nil
	}
	if src.ReadOnly() {
		return layerPath(layers[0]), nil
	}
	if len(layers) < 2 {
		return "", apiErr(CodeRefused, fmt.Sprintf("export %q has no frozen layer yet: cut one with 'vhd ctl PATH snapshot %s NEWTOP' first", name, name))
	}
	return layerPath(layers[1]), nil
}

// fuseOptions is how an added export is mounted over FUSE: at dir if
// the request named one, else under the FUSE root; nil for neither.
// Folders made for it are removed when it goes.
func (cs *controlServer) fuseOptions(name, dir, desc string, readOnly bool) *FUSEOptions {
	if dir == "" && cs.opts.FUSERoot == "" {
		return nil
	}
	if dir == "" {
		dir = filepath.Join(cs.opts.FUSERoot, name)
	}
	return &FUSEOptions{Dir: dir, MakeDir: true, DetachBusy: true, Mount: vhdfs.Options{
		ReadOnly: readOnly, FsName: desc, Logger: cs.log,
		Info: map[string]any{"export": name, "image": desc, "served_over": "nbd and fuse"},
	}}
}
