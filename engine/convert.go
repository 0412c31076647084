package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Format names an image format Convert reads or writes.
type Format string

// Formats. FormatAuto and FormatVHD are for sources only; FormatFixed and
// FormatDynamic for destinations; FormatRaw for both.
const (
	FormatAuto    Format = ""        // detect by signatures (Detect)
	FormatVHD     Format = "vhd"     // any VHD the engine opens
	FormatRaw     Format = "raw"     // a raw image file or a block device
	FormatFixed   Format = "fixed"   // a fixed VHD
	FormatDynamic Format = "dynamic" // a dynamic VHD
)

// IsVHD reports whether the file or device at path carries a VHD
// signature (Detect): a footer cookie ("conectix") in its last 512 bytes,
// in its last 511 (pre-2004 Virtual PC), or at offset 0 (the footer copy
// of a dynamic image whose end is damaged), or a dynamic header at 512.
// It says nothing about whether the VHD is intact.
func IsVHD(path string) (bool, error) {
	c, err := DetectPath(path)
	return c.Kind == ContentVHD, err
}

// OpenAny opens path as a VHD (Open) if it carries a VHD signature, and
// as a raw image or block device (OpenRaw) otherwise, unless it
// positively holds another image format or is compressed (a
// *FormatError: reading a qcow2's bytes as a disk gives garbage).
// opts.NoLock and opts.Logger apply to VHDs only.
func OpenAny(path string, opts Options) (Disk, error) {
	from, err := detectSource(path)
	if err != nil {
		return nil, err
	}
	if from == FormatVHD {
		return Open(path, opts)
	}
	return OpenRaw(path, opts.ReadOnly)
}

// detectSource says whether path is read as a VHD or as a raw disk. A
// file holding another image format, or compressed, is neither: the
// error says how to convert it, and that FormatRaw reads it anyway.
func detectSource(path string) (Format, error) {
	c, err := DetectPath(path)
	if err != nil {
		return "", err
	}
	switch c.Kind {
	case ContentVHD:
		return FormatVHD, nil
	case ContentImage, ContentPacked:
		return "", &FormatError{Path: path, Content: c, AsRaw: true}
	}
	// A raw disk, with a signature (an MBR, an ISO 9660 image) or none:
	// only a positive signature of another format refuses.
	return FormatRaw, nil
}

// ConvertOptions describe a conversion.
type ConvertOptions struct {
	// From is the source's format: FormatAuto (the default) detects a
	// VHD by its footer cookie and refuses files that hold another image
	// format or are compressed (Detect); FormatRaw takes any file as a
	// raw image, even so.
	From Format
	// To is the destination's format: FormatRaw, FormatFixed or
	// FormatDynamic.
	To Format
	// BlockSize of a dynamic destination; DefaultBlockSize if 0.
	BlockSize int64
	// Align, if set, rounds the destination's size up to a whole
	// multiple of it (Azure wants fixed VHDs of whole MiB). A VHD's size
	// is always rounded up to a whole sector.
	Align int64
	// Force replaces an existing destination file (never a device).
	Force bool
	// Progress is handed to Copy.
	Progress func(done, total int64)
	// OpenVHD, if set, opens a VHD source and describes it, so a
	// differencing image can be read with its parents (chains.Open).
	// Without it a differencing source is refused.
	OpenVHD func(path string) (Disk, string, error)
	// OpenSource, if set, opens the source in place of a file named src
	// and describes it (vhd convert reads NBD URIs through it); From and
	// OpenVHD then do not apply.
	OpenSource func(src string) (Disk, string, error)
}

// ConvertResult says what Convert did.
type ConvertResult struct {
	// Source describes the source: "dynamic VHD", "raw image", ...
	Source  string
	SrcSize int64
	// Size is the destination disk's size: SrcSize rounded up to a
	// sector (VHD) and to Align.
	Size int64
	// Replaced is set when an existing destination was replaced.
	Replaced bool
	Stats    CopyStats
}

// ErrDestinationExists is returned when Convert's destination exists and
// ConvertOptions.Force is not set.
var ErrDestinationExists = errors.New("destination exists")

// Convert copies the disk at src into a new image at dst. The new image
// is written to a temporary file in dst's folder (".NAME.tmp-*"), synced,
// renamed to dst and the folder synced: dst never names a half-written
// image, and on any error (or when ctx is done) the temporary file is
// removed and an existing dst is left as it was. Only the source's data
// is read and written: its holes stay holes.
//
// A differencing source is refused unless opts.OpenVHD opens its chain.
func Convert(ctx context.Context, src, dst string, opts ConvertOptions) (*ConvertResult, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := CheckNewFileFolder(dst); err != nil {
		return nil, err // before the temporary file, whose name would show
	}
	old, replaced, err := claimDestination(src, dst, opts.Force)
	if err != nil {
		return nil, err
	}
	if old != nil {
		// Hold the old destination's lock until it is replaced, so no one
		// opens it for writing meanwhile.
		defer old.Close()
	}
	in, desc, err := opts.openSource(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	res := &ConvertResult{Source: desc, SrcSize: in.Size(), Replaced: replaced}
	res.Size = in.Size()
	if opts.To != FormatRaw {
		res.Size = alignUp(res.Size, SectorSize)
	}
	if opts.Align > 0 {
		res.Size = alignUp(res.Size, opts.Align)
	}
	if opts.To != FormatRaw {
		if err := ValidateSize(res.Size); err != nil {
			return nil, fmt.Errorf("%s: cannot be a VHD: %w", src, err)
		}
	}
	res.Stats, err = writeTemp(dst, func(f *os.File, name string) (Disk, error) {
		return newDestination(f, name, res.Size, opts)
	}, func(out Disk) (CopyStats, error) {
		return Copy(ctx, out, in, CopyOptions{DstZeroed: true, Progress: opts.Progress})
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (o *ConvertOptions) validate() error {
	switch o.From {
	case FormatAuto, FormatVHD, FormatRaw:
	default:
		return fmt.Errorf("vhd: convert: source format %q: want raw or vhd", o.From)
	}
	switch o.To {
	case FormatRaw, FormatFixed, FormatDynamic:
	default:
		return fmt.Errorf("vhd: convert: destination format %q: want raw, fixed or dynamic", o.To)
	}
	if o.BlockSize != 0 && o.To != FormatDynamic {
		return fmt.Errorf("vhd: convert: a block size applies only to a dynamic destination")
	}
	if o.Align < 0 || o.Align > 0 && o.To != FormatRaw && o.Align%SectorSize != 0 {
		return fmt.Errorf("vhd: convert: alignment %d is not a whole number of 512-byte sectors", o.Align)
	}
	return nil
}

// claimDestination refuses a destination that exists, unless force is
// set and it is a regular file no one has open for writing; then it
// returns that file, locked, to be closed once replaced.
func claimDestination(src, dst string, force bool) (*os.File, bool, error) {
	st, err := os.Stat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if sst, err := os.Stat(src); err == nil && os.SameFile(st, sst) {
		return nil, false, fmt.Errorf("%s: source and destination are the same file; convert to a new name, then rename it", dst)
	}
	// A folder or device is never replaced, forced or not, so that comes
	// first: the message must not offer a replacement that would fail.
	if !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s: %w and is not a regular file; convert writes image files, never over a device or folder: choose a file name", dst, ErrDestinationExists)
	}
	if !force {
		return nil, false, fmt.Errorf("%s: %w; choose another name", dst, ErrDestinationExists)
	}
	f, err := OpenChecked(dst, os.O_RDONLY, false)
	if err != nil {
		return nil, false, err
	}
	if _, err := lockFile(f, dst, true); err != nil {
		f.Close()
		return nil, false, err
	}
	return f, true, nil
}

// openSource opens the source read-only and describes it: through
// OpenSource when set, else the file src.
func (o *ConvertOptions) openSource(src string) (Disk, string, error) {
	if o.OpenSource != nil {
		return o.OpenSource(src)
	}
	return openSource(src, o.From, o.OpenVHD)
}

// openSource opens the file src read-only and describes it.
func openSource(src string, from Format, openVHD func(string) (Disk, string, error)) (Disk, string, error) {
	if from == FormatAuto {
		var err error
		if from, err = detectSource(src); err != nil {
			return nil, "", err
		}
	}
	if from == FormatRaw {
		d, err := OpenRaw(src, true)
		if err != nil {
			return nil, "", err
		}
		if d.IsDevice() {
			return d, "block device", nil
		}
		return d, "raw image", nil
	}
	if openVHD != nil {
		return openVHD(src)
	}
	img, err := Open(src, Options{ReadOnly: true})
	if err != nil {
		return nil, "", err
	}
	if img.Type() == TypeDifferencing {
		img.Close()
		return nil, "", fmt.Errorf("%s: %w: a differencing image holds only changes to its parent, and this caller opens no parents", src, ErrUnsupportedImage)
	}
	return img, img.Type().String() + " VHD", nil
}

// newDestination makes the new, empty destination disk in f.
func newDestination(f *os.File, name string, size int64, opts ConvertOptions) (Disk, error) {
	switch opts.To {
	case FormatRaw:
		return NewRawFile(f, name, size)
	case FormatFixed:
		return CreateFile(OSFile(f), name, CreateOptions{Type: TypeFixed, Size: size})
	}
	return CreateFile(OSFile(f), name, CreateOptions{Type: TypeDynamic, Size: size, BlockSize: opts.BlockSize})
}

// writeTemp makes a temporary file in dst's folder, has create make a
// Disk in it and fill fill it, closes (flushing) the disk, renames the
// file to dst and syncs the folder. On any failure the temporary file is
// removed.
func writeTemp(dst string, create func(*os.File, string) (Disk, error), fill func(Disk) (CopyStats, error)) (st CopyStats, err error) {
	dir, base := filepath.Split(dst)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return st, fmt.Errorf("create a temporary file next to %s: %w", dst, err)
	}
	tmp := f.Name()
	// CreateTemp makes the file private (0600); give it the mode a new
	// image gets (as Create makes it), or the mode of the file it replaces.
	perm := fs.FileMode(0o644)
	if old, err := os.Stat(dst); err == nil {
		perm = old.Mode().Perm()
	}
	var d Disk
	closed := false
	defer func() {
		if err == nil {
			return
		}
		// Remove first: the data is garbage, so nothing needs syncing.
		os.Remove(tmp)
		switch {
		case closed:
		case d != nil:
			if dd, ok := d.(unflushedCloser); ok {
				dd.CloseUnflushed()
			} else {
				d.Close()
			}
		default:
			f.Close()
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return st, err
	}
	if d, err = create(f, tmp); err != nil {
		d = nil
		return st, err
	}
	if st, err = fill(d); err != nil {
		return st, err
	}
	// Close flushes: data and metadata are durable before the rename
	// makes the file visible under dst's name.
	closed = true
	if err = d.Close(); err != nil {
		return st, err
	}
	if err = os.Rename(tmp, dst); err != nil {
		return st, err
	}
	// The rename is durable once the folder is.
	return st, syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}
