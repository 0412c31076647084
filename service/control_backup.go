package service

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"vhdkit/backup"
	"vhdkit/chains"
	"vhdkit/engine"
)

// Backups of served disks (vhd backup; the backup package has the
// design, docs/BACKUP.md the guide). begin cuts a point of an export
// (quiesced through the host's Quiescer, or crash-consistent), exports
// the frozen layer read-only as EXPORT-backup (with vhdkit:changed when
// an earlier point is marked), and remembers the backup until end, which
// removes that export and folds the frozen layer into its parent (a
// merge job) or keeps it as a restore point. One backup per export at a
// time. What begin and end leave on disk (the marker layer, the folded
// point) is the chain's, crash-safe by the chain's own protocols; the
// table of running backups is memory, and a restarted server has none
// (`vhd backup list` shows their points, still layers of the chain).

// freezeTimeout bounds how long a Quiescer may take to freeze (a
// variable for the tests).
var freezeTimeout = time.Minute

// backupTable holds the running backups, by the disk's export name.
type backupTable struct {
	mu sync.Mutex
	// byExport is guarded by mu.
	byExport map[string]*runningBackup
}

// runningBackup is what begin cut; it does not change.
type runningBackup struct {
	export, name string
	point        chains.Layer
	pointUUID    engine.UUID
	since        backup.Since
	sinceLayers  []string
	consistency  string
	started      time.Time
	warning      string
}

func (t *backupTable) get(export string) *runningBackup {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byExport[export]
}

// find looks a backup up by its disk's export or by its own name.
func (t *backupTable) find(name string) *runningBackup {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.byExport[name]; b != nil {
		return b
	}
	for _, b := range t.byExport {
		if b.name == name {
			return b
		}
	}
	return nil
}

func (t *backupTable) put(b *runningBackup) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byExport == nil {
		t.byExport = map[string]*runningBackup{}
	}
	t.byExport[b.export] = b
}

func (t *backupTable) remove(export string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byExport, export)
}

func (t *backupTable) all() []*runningBackup {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*runningBackup, 0, len(t.byExport))
	for _, b := range t.byExport {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].export < out[j].export })
	return out
}

// backupName is the name of export's backup export.
func backupName(export string) string { return export + "-backup" }

// beginBackup cuts a point of export name and exports it read-only.
func (cs *controlServer) beginBackup(ctx context.Context, name string, req BeginRequest) (Backup, *APIError) {
	want, aerr := sinceOf(req.Since)
	if aerr != nil {
		return Backup{}, aerr
	}
	ex, c, aerr := cs.backupSource(name)
	if aerr != nil {
		return Backup{}, aerr
	}
	release, aerr := cs.claim(ex, "a backup being begun")
	if aerr != nil {
		return Backup{}, aerr
	}
	defer release()
	layers := c.Layers()
	since, err := backup.FindSince(layers, want)
	if err != nil {
		return Backup{}, apiErr(CodeNotFound, oneLine(err.Error()))
	}
	bname := backupName(name)
	if _, taken := cs.host.LookupExport(bname); taken {
		return Backup{}, apiErr(CodeExists, fmt.Sprintf("an export named %q exists already (a backup export removed by hand is not ended: 'vhd backup end PATH %s'): remove it first", bname, name))
	}
	b := &runningBackup{export: name, name: bname, point: layers[0], pointUUID: layers[0].Image.Footer().UUID, since: since, started: time.Now().UTC()}
	for _, l := range layers[:since.Layers] {
		b.sinceLayers = append(b.sinceLayers, layerPath(l))
	}
	if aerr := cs.cutPoint(ctx, b, c); aerr != nil {
		return Backup{}, aerr
	}
	if aerr := cs.exportPoint(ctx, b, c); aerr != nil {
		return Backup{}, aerr
	}
	cs.backups.put(b)
	cs.log.Info("vhd: backup begun", "export", name, "point", b.point.Path, "since", since.Point, "consistency", b.consistency)
	return cs.backupStatus(b), nil
}

// sinceOf reads BeginRequest.Since.
func sinceOf(s string) (engine.UUID, *APIError) {
	if s == "" {
		return engine.UUID{}, nil
	}
	u, err := backup.ParseUUID(s)
	if err != nil {
		return u, apiErr(CodeBadRequest, fmt.Sprintf(`"since": %v`, err))
	}
	return u, nil
}

// backupSource finds the export a backup begins on: a writable chain,
// not on an undo disk, with no backup running.
func (cs *controlServer) backupSource(name string) (*Export, *chains.Chain, *APIError) {
	if ex, ok := cs.host.LookupExport(name); ok && ex.Disk.ReadOnly() {
		return nil, nil, apiErr(CodeReadOnly, fmt.Sprintf("export %q is read-only: it does not change, so it needs no point; pull it directly ('vhd backup pull URI DEST.vhd')", name))
	}
	ex, c, aerr := cs.writableChain(name, false)
	if aerr != nil {
		return nil, nil, aerr
	}
	if b := cs.backups.get(name); b != nil {
		return nil, nil, apiErr(CodeBusy, fmt.Sprintf("a backup of export %q runs already (export %q, point %s): end it first ('vhd backup end PATH %s')", name, b.name, b.pointUUID, name))
	}
	return ex, c, nil
}

// cutPoint freezes what writes the export (the host's Quiescer), cuts the
// point with a live snapshot under its marker name, and thaws, always:
// also when the snapshot fails. Without a Quiescer (or when it has no
// agent to ask) the snapshot alone makes a crash-consistent point: it
// waits for the requests in flight and flushes the top before the swap.
func (cs *controlServer) cutPoint(ctx context.Context, b *runningBackup, c *chains.Chain) *APIError {
	b.consistency = CrashConsistent
	var thaw func() error
	if q := cs.host.currentQuiescer(); q != nil {
		fctx, cancel := context.WithTimeout(ctx, freezeTimeout)
		t, quiesced, err := q.Freeze(fctx, b.export)
		cancel()
		if err != nil {
			if t != nil {
				t()
			}
			return apiErr(CodeFailed, fmt.Sprintf("freezing what writes export %q failed (%s); nothing was cut: try again, or stop the guest's applications first", b.export, oneLine(err.Error())))
		}
		thaw = t
		if quiesced {
			b.consistency = Quiesced
		}
	}
	snapErr := c.Snapshot(backup.MarkerPath(b.point.Path, b.pointUUID))
	if thaw != nil {
		if err := thaw(); err != nil {
			b.warning = fmt.Sprintf("thawing the guest's filesystems failed (%s): they may still be frozen; thaw them (fsfreeze -u, or the agent's guest-fsfreeze-thaw)", oneLine(err.Error()))
			cs.log.Error("vhd: backup thaw failed", "export", b.export, "err", err)
		}
	}
	if snapErr != nil {
		aerr := classify(snapErr)
		aerr.Message = "cutting the point failed: " + aerr.Message
		if b.warning != "" {
			aerr.Message += "; " + b.warning
		}
		return aerr
	}
	return nil
}

// exportPoint serves the point read-only under the backup's name, over
// NBD and, with a FUSE root, over FUSE.
func (cs *controlServer) exportPoint(ctx context.Context, b *runningBackup, c *chains.Chain) *APIError {
	v, err := c.View(b.point.Path)
	if err != nil {
		return apiErr(CodeFailed, fmt.Sprintf("the point %s was cut, but it cannot be viewed (%s): 'vhd backup list PATH' shows it", b.point.Path, oneLine(err.Error())))
	}
	var disk engine.Disk = v
	if b.since.Layers > 0 {
		disk = backup.NewChangedView(v, b.since.Layers)
	}
	id := backup.Identity{Point: b.pointUUID, Since: b.since.Point}
	opts := ExportOptions{Description: id.Description(), ViewOf: b.export}
	opts.FUSE = cs.fuseOptions(b.name, "", description(b.point.Path), true)
	if _, err := cs.host.AddExport(ctx, b.name, disk, opts); err != nil {
		disk.Close()
		aerr := classify(err)
		aerr.Message = fmt.Sprintf("the point %s was cut, but exporting it failed: %s", b.point.Path, aerr.Message)
		return aerr
	}
	return nil
}

// backupStatus describes a running backup.
func (cs *controlServer) backupStatus(b *runningBackup) Backup {
	st := Backup{Export: b.export, Name: b.name, URIs: cs.host.ExportURIs(b.name),
		Point:      PointRef{Path: layerPath(b.point), UUID: b.pointUUID.String()},
		BackupUUID: backup.BackupUUID(b.pointUUID).String(), Consistency: b.consistency,
		Started: b.started, Warning: b.warning}
	if ex, ok := cs.host.LookupExport(b.name); ok {
		st.FUSE = ex.Mountpoint
	} else {
		st.URIs = []string{} // removed by hand
	}
	if b.since.Layers > 0 {
		st.Since = &SinceRef{UUID: b.since.Point.String(), Layers: b.sinceLayers}
	}
	return st
}

// runningBackups describes every backup running.
func (cs *controlServer) runningBackups() []Backup {
	out := []Backup{}
	for _, b := range cs.backups.all() {
		out = append(out, cs.backupStatus(b))
	}
	return out
}
