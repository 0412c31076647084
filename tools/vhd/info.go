package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/engine"
	"vhdkit/nbdclient"
)

var infoCmd = &command{
	name:    "info",
	args:    "[--json] [-U] IMAGE",
	summary: "show what a VHD is: type, size, creator, geometry, parent",
	doc: `Reads the footer and dynamic header of IMAGE and prints them. A
differencing image is shown on its own: its parent need not be there.
A file in another format (qcow2, VHDX, VMDK, VDI, a compressed file, a
raw disk with a partition table...) is named, with how to convert it,
and info exits 1.

IMAGE may be an NBD export's URI (nbd://HOST[:PORT]/EXPORT,
nbd+unix:///EXPORT?socket=PATH, nbds:// with --tls-ca FILE), as
qemu-img info takes it: info then says what its server does (size,
read-only, description, block status, multi-conn); JSON keys: uri,
format ("raw"), virtual_size, read_only, description, block_status,
can_multi_conn, max_block.

JSON keys: file, type ("fixed", "dynamic", "differencing"), virtual_size,
block_size (0 for fixed), allocated_bytes, file_size, uuid, timestamp
(RFC 3339), creator {app, version, host_os}, geometry {cylinders, heads,
sectors_per_track, bytes}, saved_state, footer_from_copy, and parent:
null, or for a differencing image {name, uuid, timestamp, locators:
[{code, path}]} (a locator that cannot be decoded has "error" instead of
"path"); for a differencing image also chain: [{file, type, uuid,
found_via}] top to base, or chain_error; merge_interrupted when a merge
out of or into IMAGE did not finish; in_use: [{pid, program, writing,
by, kind, mount_point, sockets, control}], the processes that have IMAGE
open (its OS lock, from /proc/locks): "by" says in words what kind
(mount, serve, run, process) and mount_point, sockets and control (a
vhd serve's control socket) say for scripts; empty when none. Sizes are
bytes.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		asJSON := fs.Bool("json", false, "print the information as JSON (keys above)")
		cf := addChainFlags(fs)
		share := fs.BoolP("force-share", "U", false, "open without a lock, even if another process has the image open for writing (what it shows may then be inconsistent)")
		cf.addNBDSource(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "IMAGE"); err != nil {
				return err
			}
			if err := cf.tlsFor(args[0]); err != nil {
				return err
			}
			if nbdclient.IsURI(args[0]) {
				return infoOfExport(ctx, e, args[0], cf.tls, *asJSON)
			}
			in, err := readInfo(args[0], *share)
			if errors.Is(err, engine.ErrLocked) {
				return fmt.Errorf("%w; -U (--force-share) shows it anyway, perhaps inconsistent", err)
			}
			if err != nil {
				return err
			}
			if err := chains.UnfinishedMerge(args[0]); err != nil {
				in.MergeInterrupted = err.Error()
			}
			if in.Parent != nil {
				addChain(in, cf.options(true), *share)
			}
			in.InUse = inUse(args[0])
			if *asJSON {
				return writeJSON(e, in)
			}
			printInfo(e, in)
			return nil
		}
	},
}

type infoJSON struct {
	File           string       `json:"file"`
	Type           string       `json:"type"`
	VirtualSize    int64        `json:"virtual_size"`
	BlockSize      int64        `json:"block_size"`
	AllocatedBytes int64        `json:"allocated_bytes"`
	FileSize       int64        `json:"file_size"`
	UUID           string       `json:"uuid"`
	Timestamp      string       `json:"timestamp"`
	Creator        creatorJSON  `json:"creator"`
	Geometry       geometryJSON `json:"geometry"`
	SavedState     bool         `json:"saved_state"`
	FooterFromCopy bool         `json:"footer_from_copy"`
	Parent         *parentJSON  `json:"parent"`
	// Chain lists a differencing image's chain, top to base, when its
	// parents open; ChainError says why they do not.
	Chain      []layerJSON `json:"chain,omitempty"`
	ChainError string      `json:"chain_error,omitempty"`
	// MergeInterrupted says that a merge out of or into this image did
	// not finish, and how to finish it.
	MergeInterrupted string `json:"merge_interrupted,omitempty"`
	// InUse lists the processes that have the image open (info_inuse.go).
	InUse []inUseJSON `json:"in_use"`
}

type layerJSON struct {
	File  string `json:"file"`
	Type  string `json:"type"`
	UUID  string `json:"uuid"`
	Found string `json:"found_via,omitempty"`
}

type creatorJSON struct {
	App     string `json:"app"`
	Version string `json:"version"`
	HostOS  string `json:"host_os"`
}

type geometryJSON struct {
	Cylinders       int   `json:"cylinders"`
	Heads           int   `json:"heads"`
	SectorsPerTrack int   `json:"sectors_per_track"`
	Bytes           int64 `json:"bytes"`
}

type parentJSON struct {
	Name      string        `json:"name"`
	UUID      string        `json:"uuid"`
	Timestamp string        `json:"timestamp"`
	Locators  []locatorJSON `json:"locators"`
}

type locatorJSON struct {
	Code  string `json:"code"`
	Path  string `json:"path,omitempty"`
	Error string `json:"error,omitempty"`
}

func readInfo(path string, share bool) (*infoJSON, error) {
	img, err := engine.Open(path, engine.Options{ReadOnly: true, NoLock: share})
	if err != nil {
		return nil, err
	}
	defer img.Close()
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	ft := img.Footer()
	g := ft.Geometry
	in := &infoJSON{
		File:           path,
		Type:           ft.DiskType.String(),
		VirtualSize:    img.Size(),
		BlockSize:      img.BlockSize(),
		AllocatedBytes: img.AllocatedBytes(),
		FileSize:       st.Size(),
		UUID:           ft.UUID.String(),
		Timestamp:      vhdTime(ft.Timestamp),
		Creator: creatorJSON{
			App:     trimSpace(ft.Creator()),
			Version: fmt.Sprintf("%d.%d", ft.CreatorVersion>>16, ft.CreatorVersion&0xffff),
			HostOS:  trimSpace(ft.HostOS()),
		},
		Geometry:       geometryJSON{int(g.Cylinders), int(g.Heads), int(g.SectorsPerTrack), g.Bytes()},
		SavedState:     ft.SavedState != 0,
		FooterFromCopy: img.FooterFromCopy(),
	}
	if h := img.Header(); h != nil && ft.DiskType == engine.TypeDifferencing {
		p := &parentJSON{Name: h.ParentName, UUID: h.ParentUUID.String(), Timestamp: vhdTime(h.ParentTimestamp), Locators: []locatorJSON{}}
		locs, err := img.ParentLocators()
		if err != nil {
			return nil, err
		}
		for _, l := range locs {
			lj := locatorJSON{Code: l.Code, Path: l.Path}
			if l.Err != nil {
				lj.Error = l.Err.Error()
			}
			p.Locators = append(p.Locators, lj)
		}
		in.Parent = p
	}
	return in, nil
}

// addChain opens a differencing image's chain to list its layers.
func addChain(in *infoJSON, opts chains.Options, share bool) {
	opts.NoLock = share
	c, err := chains.Open(in.File, opts)
	if err != nil {
		in.ChainError = err.Error()
		return
	}
	defer c.Close()
	for _, l := range c.Layers() {
		ft := l.Image.Footer()
		typ := ft.DiskType.String()
		if l.Image.IsRaw() {
			typ = "raw" // the raw parent of a Xen child (vhd-util snapshot -m)
		}
		in.Chain = append(in.Chain, layerJSON{File: l.Path, Type: typ, UUID: ft.UUID.String(), Found: l.Found})
	}
}

func vhdTime(ts uint32) string { return engine.VHDTime(ts).Format(time.RFC3339) }

func trimSpace(s string) string {
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	return s
}

func printInfo(e *env, in *infoJSON) {
	w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(w, "%s:\t"+format+"\n", append([]any{k}, args...)...) }
	row("file", "%s", in.File)
	row("type", "%s", in.Type)
	row("virtual size", "%s", human(in.VirtualSize))
	if in.BlockSize > 0 {
		row("block size", "%s", human(in.BlockSize))
	}
	row("allocated", "%s", human(in.AllocatedBytes))
	row("file size", "%s", human(in.FileSize))
	c := in.Creator
	row("creator", "%q version %s on %q", c.App, c.Version, c.HostOS)
	g := in.Geometry
	row("geometry (CHS)", "%d/%d/%d (%s)", g.Cylinders, g.Heads, g.SectorsPerTrack, human(g.Bytes))
	row("uuid", "%s", in.UUID)
	row("timestamp", "%s", in.Timestamp)
	row("saved state", "%s", yesNo(in.SavedState))
	row("in use", "%s", inUseRow(in.InUse))
	if p := in.Parent; p != nil {
		row("parent name", "%s", p.Name)
		row("parent uuid", "%s", p.UUID)
		row("parent timestamp", "%s", p.Timestamp)
		for _, l := range p.Locators {
			if l.Error != "" {
				row("parent locator "+l.Code, "(cannot decode: %s)", l.Error)
			} else {
				row("parent locator "+l.Code, "%s", l.Path)
			}
		}
	}
	for i, l := range in.Chain {
		via := ""
		if l.Found != "" {
			via = ", found via " + l.Found
		}
		row(fmt.Sprintf("chain layer %d", i), "%s (%s%s)", l.File, l.Type, via)
	}
	if in.ChainError != "" {
		row("chain", "cannot open the parents: %s", in.ChainError)
	}
	w.Flush()
	if in.FooterFromCopy {
		fmt.Fprintf(e.stdout, "notice: the footer at the end of the file is damaged; this was read from the copy at offset 0 ('vhd repair %s' writes it back)\n", in.File)
	}
	if in.MergeInterrupted != "" {
		fmt.Fprintf(e.stdout, "notice: %s\n", in.MergeInterrupted)
	}
	if in.SavedState {
		fmt.Fprintf(e.stdout, "notice: a virtual machine saved its state with this disk; do not compact or resize it\n")
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
