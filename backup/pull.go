package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/nbdclient"
)

// PullOptions say what to pull where.
type PullOptions struct {
	// URI is the export (a backup export of vhd serve, or any NBD
	// server's).
	URI string
	// Dest is the backup to write: a dynamic VHD, or with Since a
	// differencing VHD over Since. It must not exist.
	Dest string
	// Since is the backup of the export's earlier point (an incremental),
	// or "".
	Since string
	// Connections to open (4 if 0); one if the server does not allow
	// several to one disk. Every one starts TLS for an nbds URI.
	Connections int
	// TLS names the CA, client certificate and server name for an nbds
	// URI (vhd backup pull's --tls-* flags); any given with a plaintext
	// URI is refused.
	TLS nbdclient.TLSFiles
	// Chains opens Since with its chain.
	Chains chains.Options
	// Progress is told the bytes copied of the bytes to copy.
	Progress func(done, total int64)
	// Notify is told what the pull decided on its own (resume, start
	// over, one connection); may be nil.
	Notify func(msg string)
}

// PullResult says what a pull did. Byte counts are of this run.
type PullResult struct {
	Dest        string  `json:"dest"`
	UUID        string  `json:"uuid"`
	Point       string  `json:"point"` // "" when the server does not say
	Since       string  `json:"since"` // the earlier point, or ""
	Base        string  `json:"base"`  // Since's path, or ""
	Size        int64   `json:"size"`
	Planned     int64   `json:"planned_bytes"` // bytes the plan covers
	Resumed     int64   `json:"resumed_bytes"` // of those, copied before this run
	Read        int64   `json:"read_bytes"`
	Written     int64   `json:"written_bytes"`      // data written
	Zeroed      int64   `json:"zeroed_bytes"`       // zeros written (incremental)
	SkippedZero int64   `json:"skipped_zero_bytes"` // zeros not written (full)
	FileBytes   int64   `json:"file_bytes"`         // DEST's allocated size
	Connections int     `json:"connections"`
	Seconds     float64 `json:"seconds"`
}

// pull is one Pull under way.
type pull struct {
	o     PullOptions
	conns []*nbdclient.Conn
	info  nbdclient.Info
	id    Identity
	known bool // id came from the server
	base  engine.UUID
	res   PullResult
}

// Pull copies an export into a new VHD: every allocated extent into a
// dynamic image, or with Since the extents changed since Since's point
// into a differencing image over Since. It writes DEST.part and its state
// log DEST.part.state, checks what it wrote, and only then renames
// DEST.part to DEST: DEST never exists half-written. Run again after an
// interruption (a signal, a lost connection, a crash) with the same
// arguments, it resumes: the pieces the log names are not copied again.
func Pull(ctx context.Context, o PullOptions) (*PullResult, error) {
	start := time.Now()
	if _, err := os.Lstat(o.Dest); err == nil {
		return nil, fmt.Errorf("%s: %w (a pull writes a new file)", o.Dest, fs.ErrExist)
	}
	if err := engine.CheckNewFileFolder(o.Dest); err != nil {
		return nil, err // before DEST.part, whose name would show
	}
	p := &pull{o: o, res: PullResult{Dest: o.Dest, Base: o.Since}}
	if err := p.dial(ctx); err != nil {
		return nil, err
	}
	defer p.closeConns()
	if err := p.checkBase(); err != nil {
		return nil, err
	}
	plan, err := planCopy(ctx, p.conns[0], o.Since != "")
	if err != nil {
		return nil, err
	}
	if err := p.copyInto(ctx, plan); err != nil {
		return nil, err
	}
	p.res.Seconds = time.Since(start).Seconds()
	if st, err := os.Stat(o.Dest); err == nil {
		p.res.FileBytes = st.Sys().(*syscall.Stat_t).Blocks * 512
	}
	return &p.res, nil
}

// dial opens the connections and reads what the export says it is.
func (p *pull) dial(ctx context.Context) error {
	opts := nbdclient.Options{MetaContexts: []string{ctxAllocation}}
	if p.o.Since != "" {
		opts.MetaContexts = append(opts.MetaContexts, ctxChanged)
	}
	u, err := nbdclient.ParseURI(p.o.URI)
	if err != nil {
		return err
	}
	if u.TLS || p.o.TLS != (nbdclient.TLSFiles{}) {
		if opts.TLS, err = u.TLSConfig(p.o.TLS); err != nil {
			return err
		}
	}
	first, err := nbdclient.DialURI(ctx, u, opts)
	if err != nil {
		return err
	}
	p.conns = []*nbdclient.Conn{first}
	p.info = first.Info()
	p.id, p.known = ParseDescription(p.info.Description)
	p.res.Size = p.info.Size
	if p.known {
		p.res.Point = p.id.Point.String()
		if p.id.HasSince() && p.o.Since != "" {
			p.res.Since = p.id.Since.String()
		}
	}
	n := p.o.Connections
	if n <= 0 {
		n = 4
	}
	if n > 1 && !p.info.CanMultiConn() {
		p.notify("the server does not say several connections see one disk (no multi-conn): pulling over one")
		n = 1
	}
	for len(p.conns) < n {
		c, err := nbdclient.DialURI(ctx, u, opts)
		if err != nil {
			return err
		}
		p.conns = append(p.conns, c)
	}
	p.res.Connections = n
	return nil
}

func (p *pull) closeConns() {
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *pull) notify(msg string) {
	if p.o.Notify != nil {
		p.o.Notify(msg)
	}
}

// checkBase checks, for an incremental, that the export lists changes
// since the very point Since is the backup of.
func (p *pull) checkBase() error {
	if p.o.Since == "" {
		return nil
	}
	if !p.known || !p.id.HasSince() {
		return fmt.Errorf("%s lists no changes since an earlier point (it is not a vhdkit backup export, or its backup had no earlier point): pull a full backup, without --since", p.o.URI)
	}
	img, err := engine.Open(p.o.Since, engine.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("--since %s: %w", p.o.Since, err)
	}
	ft := img.Footer()
	img.Close()
	want := BackupUUID(p.id.Since)
	if ft.UUID != want {
		return fmt.Errorf("%s is not the backup of point %s, which the export lists the changes since (its UUID is %s; that backup's is %s): end this backup and begin again with --since %s, or pull a full backup", p.o.Since, p.id.Since, ft.UUID, want, p.o.Since)
	}
	if ft.DiskSize() != p.info.Size {
		return fmt.Errorf("%s is %d bytes and the export %d: it is not a backup of this disk", p.o.Since, ft.DiskSize(), p.info.Size)
	}
	p.base = ft.UUID
	return nil
}

// header is what the state log records of this pull.
func (p *pull) header() stateHeader {
	h := stateHeader{Size: p.info.Size, Base: p.base}
	if p.known {
		h.Point = p.id.Point
		if p.o.Since != "" {
			h.Since = p.id.Since
		}
	}
	return h
}

// copyInto copies the plan into DEST.part (resuming what a state log
// says is there), verifies it, and renames it to DEST.
func (p *pull) copyInto(ctx context.Context, plan []piece) error {
	part, statePath := p.o.Dest+".part", p.o.Dest+".part.state"
	dest, log, err := p.prepare(part, statePath)
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			dest.Close()
			log.f.Close()
		}
	}()
	cp := &copier{conns: p.conns, dest: dest, log: log, incremental: p.o.Since != "", progress: p.o.Progress}
	p.res.Planned = total(plan)
	err = cp.run(ctx, plan)
	p.res.Resumed = cp.resumed
	p.res.Read, p.res.Written = cp.stats.read.Load(), cp.stats.written.Load()
	p.res.Zeroed, p.res.SkippedZero = cp.stats.zeroed.Load(), cp.stats.skipped.Load()
	if err != nil {
		return fmt.Errorf("pull stopped with %d of %d bytes copied into %s: %w; run the same command again to resume", cp.done.Load(), cp.total, part, err)
	}
	if err := verify(ctx, dest, log, plan); err != nil {
		return fmt.Errorf("%w; %s is kept: remove it and %s to start again", err, part, statePath)
	}
	closed = true
	if err := closeBoth(dest, log.f); err != nil {
		return err
	}
	if err := checkImage(part); err != nil {
		return err
	}
	return commit(part, p.o.Dest, statePath)
}

// prepare opens DEST.part and its log to resume them, or makes new ones.
func (p *pull) prepare(part, statePath string) (engine.Disk, *stateLog, error) {
	want := p.header()
	if dest, log, ok := p.resume(part, statePath, want); ok {
		p.notify(fmt.Sprintf("resuming into %s: %d pieces were copied before", part, len(log.done)))
		return dest, log, nil
	}
	for _, f := range []string{part, statePath} {
		if _, err := os.Lstat(f); err == nil {
			p.notify(fmt.Sprintf("starting over: removing %s, left by a pull of another point (or one that cannot be resumed)", f))
			if err := os.Remove(f); err != nil {
				return nil, nil, err
			}
		}
	}
	if err := p.create(part); err != nil {
		return nil, nil, err
	}
	sf, err := os.OpenFile(statePath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, nil, err
	}
	log, err := createState(engine.OSFile(sf), want)
	if err == nil {
		err = syncDir(filepath.Dir(part))
	}
	if err != nil {
		sf.Close()
		return nil, nil, fmt.Errorf("writing %s: %w", statePath, err)
	}
	dest, err := chains.Open(part, p.o.Chains)
	if err != nil {
		sf.Close()
		return nil, nil, err
	}
	return dest, log, nil
}

// resume opens a DEST.part and its log left by an interrupted pull of
// the same thing, repairing what a crash left in the image; false when
// there is none, or it cannot be used (then the caller starts over).
func (p *pull) resume(part, statePath string, want stateHeader) (engine.Disk, *stateLog, bool) {
	if want.Point.IsZero() {
		return nil, nil, false // the server does not say what it serves
	}
	sf, err := os.OpenFile(statePath, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, false
	}
	log, err := openState(engine.OSFile(sf))
	if err != nil || log.head != want {
		sf.Close()
		return nil, nil, false
	}
	if err := repairIfNeeded(part); err != nil {
		sf.Close()
		return nil, nil, false
	}
	dest, err := chains.Open(part, p.o.Chains)
	if err != nil {
		sf.Close()
		return nil, nil, false
	}
	return dest, log, true
}

// repairIfNeeded checks an image a killed pull left and repairs it: what
// never reached a flush is cut, which the log never named.
func repairIfNeeded(path string) error {
	r, err := engine.CheckPath(path, engine.CheckOptions{})
	if err == nil && r.OK() {
		return nil
	}
	if _, err := engine.Repair(path, engine.RepairOptions{}); err != nil {
		return err
	}
	return checkImage(path)
}

// create makes DEST.part: a dynamic image, or a differencing one over
// Since, with the backup's UUID.
func (p *pull) create(part string) error {
	opts := engine.CreateOptions{Type: engine.TypeDynamic, Size: p.info.Size}
	if p.known {
		opts.UUID = BackupUUID(p.id.Point)
	}
	if p.o.Since != "" {
		base, err := engine.Open(p.o.Since, engine.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		ft := base.Footer()
		opts.Type, opts.BlockSize = engine.TypeDifferencing, base.BlockSize()
		base.Close()
		// The locators are those of DEST, in the same folder: the rename
		// keeps them true.
		locs, err := chains.Locators(p.o.Dest, p.o.Since)
		if err != nil {
			return err
		}
		opts.Parent = &engine.ParentInfo{UUID: ft.UUID, Timestamp: ft.Timestamp, Name: filepath.Base(p.o.Since), Locators: locs}
	}
	img, err := engine.Create(part, opts)
	if err != nil {
		return err
	}
	p.res.UUID = img.Footer().UUID.String()
	return img.Close()
}

func closeBoth(d engine.Disk, f engine.File) error {
	return errors.Join(d.Close(), f.Close())
}

func checkImage(path string) error {
	r, err := engine.CheckPath(path, engine.CheckOptions{})
	if err != nil {
		return err
	}
	if !r.OK() {
		return fmt.Errorf("%s does not pass vhd check (%v): it is kept for a look; remove it to start again", path, r.Problems[0])
	}
	return nil
}

// commit renames DEST.part to DEST (never over an existing DEST), syncs
// the folder, then removes the state log. A crash before the rename
// leaves a pull to resume; after, a complete DEST (a stale state log
// beside it is ignored: DEST exists, so no pull resumes into it).
func commit(part, dest, statePath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, part, unix.AT_FDCWD, dest, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A filesystem without RENAME_NOREPLACE: a link fails the same
		// way on an existing DEST.
		if err = os.Link(part, dest); err == nil {
			err = os.Remove(part)
		}
	}
	if err != nil {
		return fmt.Errorf("renaming %s to %s: %w", part, dest, err)
	}
	dir := filepath.Dir(dest)
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Remove(statePath); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
