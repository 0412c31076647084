package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"vhdkit/nbdclient"
)

// exportInfo is info of an NBD export (qemu-img info nbd://...): what
// its server says of it.
type exportInfo struct {
	URI          string `json:"uri"`
	Format       string `json:"format"` // always raw: an export is a disk's bytes
	Size         int64  `json:"virtual_size"`
	ReadOnly     bool   `json:"read_only"`
	Description  string `json:"description,omitempty"`
	BlockStatus  bool   `json:"block_status"`
	CanMultiConn bool   `json:"can_multi_conn"`
	MaxBlock     uint32 `json:"max_block"`
}

// infoOfExport connects to the export at uri and says what it is.
func infoOfExport(ctx context.Context, e *env, uri string, tls nbdclient.TLSFiles, asJSON bool) error {
	d, err := nbdclient.OpenDisk(ctx, uri, tls)
	if err != nil {
		return err
	}
	defer d.Close()
	i := d.Info()
	_, bs := i.Contexts["base:allocation"]
	in := exportInfo{URI: uri, Format: "raw", Size: i.Size, ReadOnly: i.ReadOnly(), Description: i.Description,
		BlockStatus: bs, CanMultiConn: i.CanMultiConn(), MaxBlock: i.MaxBlock}
	if asJSON {
		return writeJSON(e, in)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(w, "%s:\t%s\n", k, v) }
	row("export", uri)
	row("format", "raw (an NBD export is the disk's bytes)")
	row("virtual size", human(in.Size))
	row("read-only", yesNo(in.ReadOnly))
	if in.Description != "" {
		row("description", in.Description)
	}
	row("block status", yesNo(in.BlockStatus)+" (base:allocation)")
	row("multi-conn", yesNo(in.CanMultiConn))
	return w.Flush()
}
