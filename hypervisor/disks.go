package hypervisor

import (
	"context"
	"fmt"
	"log/slog"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/nbdserve"
	"vhdkit/service"
)

// vmDisk is one disk of the guest while it runs.
type vmDisk struct {
	Disk
	// open is the image opened: Path, or for a restore the fresh top
	// over the saved layer.
	open  string
	undo  bool
	chain *chains.Chain // owned by the host once exported
}

// serveDisks opens every disk (on an undo disk with an undo policy) and
// serves each over NBD under its export name on the private socket:
// the live layer, so a running guest's disks can be snapshotted and
// viewed (Chain.Snapshot, Chain.View) while QEMU writes them. On error
// the host is closed (and with it what was opened).
func serveDisks(ctx context.Context, disks []*vmDisk, undo Undo, opts chains.Options, l launch, wrap func(engine.Disk) engine.Disk, log *slog.Logger) (*service.Host, error) {
	h := service.New(service.Config{NBD: &nbdserve.Server{Logger: log}, Logger: log})
	for i, d := range disks {
		c, err := openDisk(d, undo, opts, log)
		if err != nil {
			h.Close()
			return nil, err
		}
		var served engine.Disk = c
		if wrap != nil {
			served = wrap(c)
		}
		if _, err := h.AddExport(ctx, exportName(i), served, service.ExportOptions{Description: d.Path, Undo: d.undo}); err != nil {
			c.Close()
			h.Close()
			return nil, err
		}
		d.chain = c
	}
	if err := h.ListenUnix(l.nbdSocket()); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// openDisk opens one disk: read-only, on its undo disk, or for writing.
func openDisk(d *vmDisk, undo Undo, opts chains.Options, log *slog.Logger) (*chains.Chain, error) {
	opts.ReadOnly = d.ReadOnly
	if d.ReadOnly || undo == UndoNone || d.open != d.Path {
		return chains.Open(d.open, opts)
	}
	c, created, err := chains.OpenUndo(d.Path, opts)
	if err != nil {
		return nil, fmt.Errorf("open %s on its undo disk: %w", d.Path, err)
	}
	d.undo = true
	if !created {
		log.Warn("continuing on the undo disk an earlier run kept", "undo_disk", chains.UndoPath(d.Path))
	}
	return c, nil
}
