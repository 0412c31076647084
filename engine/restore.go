package engine

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// WriteOntoDevice copies the disk at src onto the block device dev, in
// place: a restore, which a user asks for by name (vhd convert
// --onto-device), never what Convert does to a path that happens to be a
// device. Everything of dev up to src's size is overwritten: data is
// written, src's holes and zeros are zeroed (a device holds whatever was
// there before); what lies past src's end is left alone. The device is
// flushed before it returns.
//
// The device is opened exclusively (O_EXCL on a block device): one that
// is mounted, or held by another exclusive opener (a RAID or LVM member,
// another restore), is refused before anything is written. A device
// smaller than src is refused too. There is no temporary copy to fall
// back on: an error or ctx ending part-way leaves the device partly
// restored, and the error says so.
func WriteOntoDevice(ctx context.Context, src, dev string, opts ConvertOptions) (*ConvertResult, error) {
	if opts.To != FormatRaw {
		return nil, fmt.Errorf("vhd: writing onto a device takes the raw disk (--to raw)")
	}
	excl, err := claimDevice(src, dev)
	if err != nil {
		return nil, err
	}
	defer excl.Close()
	in, desc, err := opts.openSource(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	out, err := OpenRaw(dev, false)
	if err != nil {
		return nil, err
	}
	res := &ConvertResult{Source: desc, SrcSize: in.Size(), Size: out.Size()}
	if out.Size() < in.Size() {
		out.Close()
		return nil, fmt.Errorf("%s holds %d bytes, less than the %d of %s: nothing was written", dev, out.Size(), in.Size(), src)
	}
	res.Stats, err = Copy(ctx, &prefix{Disk: out, size: in.Size()}, in, CopyOptions{Progress: opts.Progress})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("%w; %s is partly restored: run the restore again", err, dev)
	}
	return res, nil
}

// claimDevice checks that dev is a block device other than src and
// opens it exclusively; the open file keeps the claim while it stays
// open.
func claimDevice(src, dev string) (*os.File, error) {
	st, err := os.Stat(dev)
	if err != nil {
		return nil, err
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return nil, fmt.Errorf("%s is not a block device; to write an image file, convert without --onto-device", dev)
	}
	if sst, err := os.Stat(src); err == nil && os.SameFile(st, sst) {
		return nil, fmt.Errorf("%s: source and destination are the same device", dev)
	}
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("%s is in use (mounted, or claimed by another program): unmount it or stop that program first; nothing was written", dev)
	}
	return f, err
}

// prefix is the first size bytes of a disk, so Copy zeroes no further
// than the source's end.
type prefix struct {
	Disk
	size int64
}

func (p *prefix) Size() int64 { return p.size }
