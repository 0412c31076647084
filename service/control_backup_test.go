package service

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"vhdkit/backup"
	"vhdkit/chains"
	"vhdkit/engine"
)

// stubQuiescer records the order of what a backup begin does to the
// export's writers: freeze, the layers as the freeze and the thaw see
// them, thaw.
type stubQuiescer struct {
	h *Host
	// fail makes Freeze fail; block makes it wait for its context;
	// noAgent answers "nothing to quiesce".
	fail, block, noAgent bool

	mu     sync.Mutex
	events []string
}

func (q *stubQuiescer) note(e string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.events = append(q.events, e)
}

func (q *stubQuiescer) depth(export string) int {
	ex, _ := q.h.LookupExport(export)
	return ex.Disk.(*chains.Chain).Depth()
}

func (q *stubQuiescer) Freeze(ctx context.Context, export string) (func() error, bool, error) {
	q.note("freeze at depth " + itoa(q.depth(export)))
	switch {
	case q.fail:
		return nil, false, errors.New("the agent said no")
	case q.block:
		<-ctx.Done()
		return nil, false, ctx.Err()
	}
	return func() error {
		q.note("thaw at depth " + itoa(q.depth(export)))
		return nil
	}, !q.noAgent, nil
}

func itoa(n int) string { return string(rune('0' + n)) }

func (q *stubQuiescer) seen() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return strings.Join(q.events, ", ")
}

// TestBackupBeginQuiesceOrder: freeze, then the snapshot, then thaw;
// thaw also when the snapshot fails; a failed or timed-out freeze cuts
// nothing; an agent that cannot quiesce gives a crash-consistent point.
func TestBackupBeginQuiesceOrder(t *testing.T) {
	h, image, ctl, stop := controlHost(t, 16<<20)
	c := NewControlClient(ctl)
	ctx := context.Background()
	q := &stubQuiescer{h: h}
	h.SetQuiescer(q)

	b, err := c.BeginBackup(ctx, "disk", BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := q.seen(); got != "freeze at depth 1, thaw at depth 2" || b.Consistency != Quiesced {
		t.Fatalf("begin: %q, consistency %s", got, b.Consistency)
	}
	if _, err := c.EndBackup(ctx, "disk", EndRequest{}); err != nil {
		t.Fatal(err)
	}

	// The snapshot fails (its new top's name is taken): thawed all the
	// same, nothing exported.
	q.events = nil
	top := layersOf(t, c)[0]
	blocker := backup.MarkerPath(top, uuidOf(t, top))
	if err := os.WriteFile(blocker, []byte("not a VHD"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.BeginBackup(ctx, "disk", BeginRequest{}); err == nil || !strings.Contains(err.Error(), "cutting the point failed") {
		t.Fatalf("begin over a taken name: %v", err)
	}
	if got := q.seen(); got != "freeze at depth 2, thaw at depth 2" {
		t.Fatalf("a failed snapshot: %q", got)
	}
	os.Remove(blocker)

	q.events, q.fail = nil, true
	if _, err := c.BeginBackup(ctx, "disk", BeginRequest{}); err == nil || !strings.Contains(err.Error(), "nothing was cut") {
		t.Fatalf("begin with a failing freeze: %v", err)
	}
	old := freezeTimeout
	freezeTimeout = 200 * time.Millisecond
	defer func() { freezeTimeout = old }()
	q.fail, q.block = false, true
	if _, err := c.BeginBackup(ctx, "disk", BeginRequest{}); err == nil || !strings.Contains(err.Error(), "nothing was cut") {
		t.Fatalf("begin with a freeze that times out: %v", err)
	}
	if got := q.seen(); got != "freeze at depth 2, freeze at depth 2" || len(layersOf(t, c)) != 2 {
		t.Fatalf("failed freezes: %q, %d layers", got, len(layersOf(t, c)))
	}

	q.block, q.noAgent = false, true
	b, err = c.BeginBackup(ctx, "disk", BeginRequest{})
	if err != nil || b.Consistency != CrashConsistent {
		t.Fatalf("begin without an agent: %v, %+v", err, b)
	}
	h.SetQuiescer(nil)
	if _, err := c.EndBackup(ctx, "disk", EndRequest{Keep: true}); err != nil {
		t.Fatal(err)
	}
	b, err = c.BeginBackup(ctx, "disk", BeginRequest{})
	if err != nil || b.Consistency != CrashConsistent {
		t.Fatalf("begin without a quiescer: %v, %+v", err, b)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, l := range layersAfter(t, image) {
		checkImageClean(t, l)
	}
}

func layersOf(t *testing.T, c *ControlClient) []string {
	t.Helper()
	st, err := c.Export(context.Background(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	return st.Layers
}

func uuidOf(t *testing.T, path string) [16]byte {
	t.Helper()
	ch, err := chains.Open(path, chains.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	return ch.Top().Footer().UUID
}

// TestBackupLifecycle: begin (full), status and list show it, end folds
// the point into its parent; the next begin lists changes since the
// first point; end --keep keeps and marks it; a third backup's end will
// not fold into the kept point; one backup per export at a time.
func TestBackupLifecycle(t *testing.T) {
	h, _, ctl, stop := controlHost(t, 16<<20)
	c := NewControlClient(ctl)
	ctx := context.Background()
	fill(t, h, 0, 1<<20, 1)

	b1, err := c.BeginBackup(ctx, "disk", BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if b1.Since != nil || b1.Name != "disk-backup" || len(b1.URIs) != 1 {
		t.Fatalf("first backup: %+v", b1)
	}
	if _, err := c.BeginBackup(ctx, "disk", BeginRequest{}); !isCode(err, CodeBusy) {
		t.Fatalf("a second begin: %v", err)
	}
	st, _ := c.Status(ctx)
	if len(st.Backups) != 1 || st.Backups[0].Point.UUID != b1.Point.UUID {
		t.Fatalf("status backups: %+v", st.Backups)
	}
	fill(t, h, 4<<20, 1<<20, 2)
	end, err := c.EndBackup(ctx, "disk", EndRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if end.Job != nil || end.Note == "" {
		t.Fatalf("ending a point that is the base: %+v", end)
	}

	b2, err := c.BeginBackup(ctx, "disk", BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if b2.Since == nil || b2.Since.UUID != b1.Point.UUID || len(b2.Since.Layers) != 1 {
		t.Fatalf("second backup's since: %+v", b2.Since)
	}
	list, err := c.Backups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The running backup's point, and the first point (the base: its
	// end had nothing to fold it into).
	if len(list.Points) != 1 || len(list.Points[0].Points) != 2 {
		t.Fatalf("points: %+v", list.Points)
	}
	if p := list.Points[0].Points; p[0].UUID != b2.Point.UUID || !p[0].Running || p[1].UUID != b1.Point.UUID || p[1].Running || p[1].Kept {
		t.Fatalf("points: %+v", p)
	}
	if _, err := c.EndBackup(ctx, "disk-backup", EndRequest{Keep: true}); err != nil {
		t.Fatal(err)
	}
	if !backup.IsKept(b2.Point.Path, mustUUID(t, b2.Point.UUID)) {
		t.Fatal("the kept point has no mark")
	}

	fill(t, h, 8<<20, 1<<20, 3)
	b3, err := c.BeginBackup(ctx, "disk", BeginRequest{Since: b1.BackupUUID})
	if err != nil {
		t.Fatal(err)
	}
	if b3.Since == nil || b3.Since.UUID != b1.Point.UUID || len(b3.Since.Layers) != 2 {
		t.Fatalf("a backup since the first point, by its backup's UUID: %+v", b3.Since)
	}
	if _, err := c.EndBackup(ctx, "disk", EndRequest{}); !isCode(err, CodeRefused) {
		t.Fatalf("a fold into a kept point: %v", err)
	}
	backup.Unkeep(b2.Point.Path)
	end, err = c.EndBackup(ctx, "disk", EndRequest{})
	if err != nil || end.Job == nil {
		t.Fatalf("end: %v %+v", err, end)
	}
	j, err := c.Job(ctx, end.Job.ID, 30*time.Second)
	if err != nil || j.State != JobSucceeded {
		t.Fatalf("the fold: %v %+v", err, j)
	}
	if _, err := c.BeginBackup(ctx, "disk", BeginRequest{Since: b2.Point.UUID}); !isCode(err, CodeNotFound) {
		t.Fatalf("a backup since a point folded away: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, l := range layersAfter(t, b3.Point.Path) {
		checkImageClean(t, l)
	}
}

func mustUUID(t *testing.T, s string) [16]byte {
	t.Helper()
	u, err := backup.ParseUUID(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func checkImageClean(t *testing.T, path string) {
	t.Helper()
	rep, err := engine.CheckPath(path, engine.CheckOptions{})
	if err != nil || !rep.OK() {
		t.Errorf("check %s: %v %v", path, err, rep)
	}
}

// layersAfter lists the VHDs in the folder of path.
func layersAfter(t *testing.T, path string) []string {
	t.Helper()
	ls, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.vhd"))
	return ls
}
