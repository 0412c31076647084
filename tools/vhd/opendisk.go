package main

import (
	"context"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/nbdclient"
)

// sourceFormat is how a command reads an existing disk: detect it, or a
// VHD, or raw bytes.
type sourceFormat string

const (
	fromAuto sourceFormat = "auto"
	fromVHD  sourceFormat = "vhd"
	fromRaw  sourceFormat = "raw"
)

// parseFormat reads a -f value, accepting qemu-img's names for the
// formats vhd reads (vpc is qemu's name for VHD).
func parseFormat(flag, v string) (sourceFormat, error) {
	switch v {
	case "", "auto":
		return fromAuto, nil
	case "vhd", "vpc":
		return fromVHD, nil
	case "raw":
		return fromRaw, nil
	}
	return "", usageErr("%s %q: vhd reads VHD (vhd, vpc) and raw images; convert others with qemu-img convert -O vpc first", flag, v)
}

// openView opens path read-only as the disk a user sees: a VHD with its
// chain of parents (chain is then set), a raw image or block device, or
// an NBD export named by its URI (as qemu-img reads nbd://; TLS files
// from --tls-* or the URI's tls-certificates=DIR). A file holding another image
// format, or compressed, is refused unless from is fromRaw.
func openView(ctx context.Context, path string, from sourceFormat, cf *chainFlags) (d engine.Disk, chain *chains.Chain, err error) {
	if nbdclient.IsURI(path) {
		if from == fromVHD {
			return nil, nil, usageErr("%s is an NBD export: its bytes are the disk's, read as raw, not a VHD file; leave the format out", path)
		}
		nd, err := nbdclient.OpenDisk(ctx, path, cf.tls)
		if err != nil {
			return nil, nil, err
		}
		return nd, nil, nil
	}
	if from == fromAuto {
		isVHD, err := engine.IsVHD(path)
		if err != nil {
			return nil, nil, err
		}
		if !isVHD {
			// OpenAny refuses other formats, saying how to convert.
			d, err := engine.OpenAny(path, engine.Options{ReadOnly: true, NoLock: cf.forceShare})
			return d, nil, err
		}
	}
	if from == fromRaw {
		d, err := engine.OpenRaw(path, true)
		return d, nil, err
	}
	c, err := chains.Open(path, cf.options(true))
	if err != nil {
		return nil, nil, err
	}
	return c, c, nil
}
