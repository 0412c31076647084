package service

import (
	"context"
	"fmt"

	"vhdkit/backup"
	"vhdkit/chains"
)

// Ending a backup, and listing backups and points.

// endBackup ends the backup of export name (or the backup export name):
// its export goes, then its frozen layer is folded into its parent (a
// merge job), or kept and marked. A fold into a kept restore point is
// refused before anything changes.
func (cs *controlServer) endBackup(ctx context.Context, name string, req EndRequest) (BackupEnd, *APIError) {
	b := cs.backups.find(name)
	if b == nil {
		return BackupEnd{}, apiErr(CodeNotFound, fmt.Sprintf("no backup of %q runs here: 'vhd backup list PATH' shows the backups and the points the chains hold (a point left by a server that stopped is folded with 'vhd ctl PATH merge EXPORT --layer LAYER')", name))
	}
	end := BackupEnd{Export: b.export, Name: b.name, Point: PointRef{Path: layerPath(b.point), UUID: b.pointUUID.String()}, Kept: req.Keep}
	ex, c, aerr := cs.writableChain(b.export, false)
	if aerr != nil && aerr.Code != CodeNotFound {
		return end, aerr
	}
	var parent *chains.Layer
	if c != nil && !req.Keep {
		if parent, aerr = foldTarget(b, c); aerr != nil {
			return end, aerr
		}
	}
	if aerr := cs.removeBackupExport(ctx, b); aerr != nil {
		return end, aerr
	}
	cs.backups.remove(b.export)
	cs.log.Info("vhd: backup ended", "export", b.export, "point", b.point.Path, "keep", req.Keep)
	switch {
	case c == nil:
		end.Note = fmt.Sprintf("export %q is no longer served: the point stays as a layer of its chain", b.export)
	case req.Keep:
		if err := backup.MarkKept(b.point.Path, b.pointUUID); err != nil {
			return end, apiErr(CodeFailed, fmt.Sprintf("the backup ended, but marking its point kept failed (%s): a later end may fold into it", oneLine(err.Error())))
		}
	case parent == nil:
		end.Note = "the point is the base of the chain: there is nothing to fold it into, and it stays as it is"
	default:
		j, aerr := cs.startJob(JobMerge, ex, layerPath(b.point), func(ctx context.Context, progress func(int64, int64)) (*chains.MergeResult, error) {
			return c.Merge(ctx, b.point.Path, progress)
		})
		if aerr != nil {
			aerr.Message = "the backup ended, but folding its point failed to start: " + aerr.Message
			return end, aerr
		}
		end.Job = &j
	}
	return end, nil
}

// foldTarget is the layer the point folds into: its parent, or nil when
// it is the base. A kept restore point is refused as a target: the fold
// would make it this point.
func foldTarget(b *runningBackup, c *chains.Chain) (*chains.Layer, *APIError) {
	layers := c.Layers()
	i, aerr := findLayer(b.export, layers, b.point.Path)
	if aerr != nil {
		return nil, aerr
	}
	if i == len(layers)-1 {
		return nil, nil
	}
	p := layers[i+1]
	if backup.IsKept(p.Path, p.Image.Footer().UUID) {
		return nil, apiErr(CodeRefused, fmt.Sprintf("the layer under this point, %s, is a restore point an earlier 'vhd backup end --keep' kept: folding into it would change it; end with 'vhd backup end PATH %s --keep', or let it go first (remove %s)", layerPath(p), b.export, backup.KeptPath(layerPath(p))))
	}
	return &p, nil
}

// removeBackupExport stops serving a backup's export, unless it is gone
// already (removed by hand).
func (cs *controlServer) removeBackupExport(ctx context.Context, b *runningBackup) *APIError {
	aerr := cs.remove(ctx, b.name)
	if aerr != nil && aerr.Code != CodeNotFound {
		return aerr
	}
	return nil
}

// listBackups describes the running backups and the points every
// writable chain holds.
func (cs *controlServer) listBackups() BackupList {
	list := BackupList{Backups: cs.runningBackups(), Points: []ChainPoints{}}
	running := map[string]bool{}
	for _, b := range list.Backups {
		running[b.Point.UUID] = true
	}
	for _, name := range cs.host.ExportNames() {
		ex, ok := cs.host.LookupExport(name)
		if !ok || ex.ViewOf != "" {
			continue
		}
		c, ok := ex.Disk.(*chains.Chain)
		if !ok {
			continue
		}
		cp := ChainPoints{Export: name, Points: []ListedPoint{}}
		for _, p := range backup.PointsOf(c.Layers()) {
			cp.Points = append(cp.Points, ListedPoint{PointRef: PointRef{Path: absOr(p.Path), UUID: p.UUID.String()},
				BackupUUID: backup.BackupUUID(p.UUID).String(), Kept: p.Kept, Running: running[p.UUID.String()], Base: p.Base})
		}
		list.Points = append(list.Points, cp)
	}
	return list
}
