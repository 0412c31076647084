package chains

import (
	"bytes"
	"context"
	"errors"
	"io"

	"vhdkit/engine"
)

const (
	// rebaseWindow bounds each Extents call (at most rebaseWindow/512
	// extents).
	rebaseWindow = 256 << 20
	// rebaseChunk is how much of each parent view is read at once.
	rebaseChunk = 4 << 20
)

// rebaser finds where two parent views differ under the holes of a
// differencing image and copies the old view's data there.
type rebaser struct {
	top         *engine.Image
	old, new    engine.Disk
	progress    func(done, total int64)
	buf, newBuf []byte
	copied      int64
	ctx         context.Context
	size        int64
}

func (r *rebaser) run(ctx context.Context) error {
	r.ctx, r.size = ctx, r.top.Size()
	for w := int64(0); w < r.size; w += rebaseWindow {
		exts, err := r.top.Extents(w, min(rebaseWindow, r.size-w))
		if err != nil {
			return err
		}
		for _, x := range exts {
			// Only where the top holds nothing does its parent show.
			if x.State == engine.ExtentHole {
				if err := r.hole(x.Off, x.Len); err != nil {
					return err
				}
			}
			if err := r.advance(x.Off + x.Len); err != nil {
				return err
			}
		}
	}
	return nil
}

// advance reports that the disk is done up to pos and says whether to go
// on: it is called after every chunk read, so a long hole of the top is
// neither silent nor deaf to Ctrl-C.
func (r *rebaser) advance(pos int64) error {
	if r.progress != nil {
		r.progress(pos, r.size)
	}
	return r.ctx.Err()
}

// hole compares the two views over a hole of the top, skipping runs
// neither view stores (both read zeros).
func (r *rebaser) hole(off, n int64) error {
	eo, err := r.old.Extents(off, n)
	if err != nil {
		return err
	}
	en, err := r.new.Extents(off, n)
	if err != nil {
		return err
	}
	for len(eo) > 0 && len(en) > 0 {
		a, b := eo[0], en[0]
		start, end := max(a.Off, b.Off), min(a.Off+a.Len, b.Off+b.Len)
		if a.State == engine.ExtentData || b.State == engine.ExtentData {
			if err := r.compare(start, end-start); err != nil {
				return err
			}
		}
		if a.Off+a.Len == end {
			eo = eo[1:]
		}
		if b.Off+b.Len == end {
			en = en[1:]
		}
	}
	return nil
}

// compare reads both views over [off, off+n) and copies the old one's
// sectors that differ.
func (r *rebaser) compare(off, n int64) error {
	for end := off + n; off < end; {
		l := min(end-off, int64(len(r.buf)))
		if err := readView(r.old, r.buf[:l], off); err != nil {
			return err
		}
		if err := readView(r.new, r.newBuf[:l], off); err != nil {
			return err
		}
		if !bytes.Equal(r.buf[:l], r.newBuf[:l]) {
			if err := r.copyDiffering(off, r.buf[:l], r.newBuf[:l]); err != nil {
				return err
			}
		}
		off += l
		if err := r.advance(off); err != nil {
			return err
		}
	}
	return nil
}

// copyDiffering writes old's sectors that differ from new's into the top,
// each run of them at once.
func (r *rebaser) copyDiffering(off int64, old, new []byte) error {
	const s = engine.SectorSize
	for i := 0; i < len(old); {
		if bytes.Equal(old[i:i+s], new[i:i+s]) {
			i += s
			continue
		}
		j := i + s
		for j < len(old) && !bytes.Equal(old[j:j+s], new[j:j+s]) {
			j += s
		}
		if err := r.write(off+int64(i), old[i:j]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// write puts p (whole sectors the top holds nothing of) into the top.
// Runs of zero sectors are written with ZeroKeepAllocated: a plain write
// of zeros may be elided where the top's current parent (the old one)
// holds no data, which would leave the new parent's data showing.
func (r *rebaser) write(off int64, p []byte) error {
	const s = engine.SectorSize
	for i := 0; i < len(p); {
		zero := isZero(p[i : i+s])
		j := i + s
		for j < len(p) && isZero(p[j:j+s]) == zero {
			j += s
		}
		var err error
		if zero {
			err = r.top.Zero(off+int64(i), int64(j-i), engine.ZeroKeepAllocated)
		} else {
			_, err = r.top.WriteAt(p[i:j], off+int64(i))
		}
		if err != nil {
			return err
		}
		r.copied += int64(j - i)
		i = j
	}
	return nil
}

func readView(d engine.Disk, p []byte, off int64) error {
	_, err := d.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
