package nbdclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"vhdkit/engine"
)

// diskReadPiece is the most one READ of Disk.ReadAt asks for: a copy's 4 MiB
// chunk goes out as several requests at once, so the server works on
// them together instead of one round trip at a time.
const diskReadPiece = 1 << 20

// Disk is an export read as an engine.Disk, so whatever copies disks
// (vhd convert) can copy from an NBD server: reads and base:allocation
// extents go to the server; writes are refused. Its methods use the
// context it was opened with: when that ends, reads fail with its error.
type Disk struct {
	ctx  context.Context
	c    *Conn
	name string
}

// IsURI reports whether s is written as an NBD URI (nbd://, nbds://,
// nbd+unix://, ...) rather than a file name.
func IsURI(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	switch scheme {
	case "nbd", "nbds", "nbd+tcp", "nbds+tcp", "nbd+unix", "nbds+unix":
		return ok
	}
	return false
}

// OpenDisk connects to the export at uri, asking for base:allocation,
// with TLS for an nbds URI (files: the client's CA, certificate and key,
// see TLSFiles).
func OpenDisk(ctx context.Context, uri string, files TLSFiles) (*Disk, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	opts := Options{MetaContexts: []string{"base:allocation"}}
	if u.TLS || files != (TLSFiles{}) {
		if opts.TLS, err = u.TLSConfig(files); err != nil {
			return nil, err
		}
	}
	c, err := DialURI(ctx, u, opts)
	if err != nil {
		return nil, err
	}
	return &Disk{ctx: ctx, c: c, name: u.String()}, nil
}

// Info is what the server said of the export.
func (d *Disk) Info() Info { return d.c.Info() }

// Size is the export's size.
func (d *Disk) Size() int64 { return d.c.Info().Size }

// ReadAt reads p at off, in pieces of at most 1 MiB (and the server's
// largest READ) sent together; a read reaching the end returns the
// bytes before it and io.EOF.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	size := d.Size()
	if off < 0 {
		return 0, fmt.Errorf("nbd: read at negative offset %d", off)
	}
	if off >= size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	piece := int(min(diskReadPiece, d.c.Info().MaxBlock))
	var wg sync.WaitGroup
	errs := make([]error, (n+piece-1)/piece)
	for i := range errs {
		lo, hi := i*piece, min(n, (i+1)*piece)
		wg.Go(func() { errs[i] = d.c.ReadAt(d.ctx, p[lo:hi], off+int64(lo)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("reading %s at %d: %w", d.name, off, firstErr(errs))
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// firstErr is the first error of errs: pieces failing together (the
// connection closed) would say the same thing each.
func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Extents describes [off, off+n) from base:allocation: a hole that reads
// as zeros is a hole, zeros are zeros, and anything else (a hole that
// may not read as zeros included) is data. A server without block
// status shows all of it as data, and so does one describing more runs
// than the range has sectors or answering about less than a sector at
// a time.
func (d *Disk) Extents(off, n int64) ([]engine.Extent, error) {
	if off < 0 || n < 0 || off > d.Size() || n > d.Size()-off {
		return nil, fmt.Errorf("nbd: extents of %d+%d: outside the export (%d bytes)", off, n, d.Size())
	}
	if _, ok := d.c.Info().Contexts["base:allocation"]; !ok {
		return []engine.Extent{{Off: off, Len: n, State: engine.ExtentData}}, nil
	}
	start, limit := off, max(1, n/512)
	asData := []engine.Extent{{Off: start, Len: n, State: engine.ExtentData}}
	var out []engine.Extent
	for end := off + n; off < end; {
		from := off
		st, err := d.c.BlockStatus(d.ctx, off, uint32(min(end-off, MaxStatusLength)))
		if err != nil {
			return nil, fmt.Errorf("block status of %s at %d: %w", d.name, off, err)
		}
		ext := st["base:allocation"]
		if len(ext) == 0 {
			return nil, fmt.Errorf("block status of %s at %d: the server described nothing", d.name, off)
		}
		for _, e := range ext {
			out = appendExtent(out, engine.Extent{Off: off, Len: e.Len, State: allocationState(e.Flags)})
			off += e.Len
		}
		if len(out) > int(limit) || off-from < 512 && off < end {
			// A server describing runs shorter than a sector (Disk
			// promises at most one extent per sector), or answering
			// about less than a sector at a time (a request per byte):
			// read it all.
			return asData, nil
		}
	}
	return out, nil
}

// allocationState maps base:allocation's flags to an extent's state.
func allocationState(flags uint32) engine.ExtentState {
	switch {
	case flags&StateZero == 0:
		return engine.ExtentData
	case flags&StateHole != 0:
		return engine.ExtentHole
	}
	return engine.ExtentZero
}

// appendExtent adds e to list, joining it to the last extent of its
// state that it touches.
func appendExtent(list []engine.Extent, e engine.Extent) []engine.Extent {
	if k := len(list) - 1; k >= 0 && list[k].State == e.State && list[k].Off+list[k].Len == e.Off {
		list[k].Len += e.Len
		return list
	}
	return append(list, e)
}

// errReadOnly refuses a change: Disk reads an export, never writes it.
var errReadOnly = errors.New("nbd: this client reads the export; it does not write it")

func (d *Disk) WriteAt(p []byte, off int64) (int, error)   { return 0, errReadOnly }
func (d *Disk) Flush() error                               { return nil }
func (d *Disk) Zero(off, n int64, _ engine.ZeroMode) error { return errReadOnly }
func (d *Disk) Trim(off, n int64) error                    { return errReadOnly }
func (d *Disk) ReadOnly() bool                             { return true }

// Close ends the connection.
func (d *Disk) Close() error { return d.c.Close() }
