package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"vhdkit/backup"
	"vhdkit/chains"
	"vhdkit/engine"
)

var resetIDCmd = &command{
	name:    "reset-id",
	args:    "[--uuid UUID] [--force] [flags] IMAGE",
	summary: "give an image a new UUID, so a copy can be used beside its original",
	doc: `Gives IMAGE a new random UUID, or the one --uuid names, and prints the
old and the new: what Hyper-V's Set-VHD -ResetDiskIdentifier and
VirtualBox's 'VBoxManage internalcommands sethduuid' do, so that a copied
disk can be attached beside the original. Works on fixed, dynamic and
differencing images (a differencing image gets a new UUID of its own;
its parent link stays). Nothing else changes: not the data, not the
timestamp (it says when the data last changed, and the data did not).
The change is atomic: a crash leaves the old UUID or the new.

Differencing images name their parent by UUID, so IMAGE's children
(images in its folder or a --parent-dir folder that record its UUID)
would stop opening: reset-id refuses, naming them, unless --force; then
re-link each with 'vhd set-parent --ignore-uuid CHILD IMAGE'. Children
whose link leads to another file with that UUID (the original IMAGE
was copied from) keep it and do not count. Also refused: an image in
use (mounted, served), a read-only file, an undo disk (.vud) and an
image with one ('vhd undo commit' or 'discard' first).

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		uuid := fs.String("uuid", "", "the new UUID (8-4-4-4-12 hex digits) instead of a random one")
		force := fs.Bool("force", false, "give the new UUID although differencing images depend on IMAGE (they stop opening until re-linked)")
		asJSON := fs.Bool("json", false, "print {image, uuid, old_uuid, changed, cut_off} as JSON (cut_off: the children that no longer open)")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "IMAGE"); err != nil {
				return err
			}
			opts := chains.ResetIDOptions{Force: *force, Open: cf.options(false)}
			if *uuid != "" {
				u, err := newUUIDFlag(*uuid)
				if err != nil {
					return err
				}
				opts.UUID = u
			}
			r, err := chains.ResetID(args[0], opts)
			if errors.Is(err, chains.ErrHasChildren) {
				return fmt.Errorf("%w (--force gives the new UUID anyway; then re-link each with 'vhd set-parent --ignore-uuid CHILD %s')", err, args[0])
			}
			if err != nil {
				return err
			}
			noteMetadataAfterData(e, "reset-id", args[0])
			if *asJSON {
				cut := append([]string{}, r.Children...)
				return writeJSON(e, map[string]any{"image": args[0], "uuid": r.New.String(), "old_uuid": r.Old.String(), "changed": r.New != r.Old, "cut_off": cut})
			}
			printResetID(e, args[0], r)
			return nil
		}
	},
}

// newUUIDFlag reads --uuid: 8-4-4-4-12 hex digits, braces allowed (as
// Windows writes it), not the nil UUID.
func newUUIDFlag(s string) (engine.UUID, error) {
	u, err := backup.ParseUUID(strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}"))
	if err != nil {
		return u, usageErr("--uuid: %v", err)
	}
	if u.IsZero() {
		return u, usageErr("--uuid: the nil UUID (all zeros) names no disk; give another, or leave --uuid out for a random one")
	}
	return u, nil
}

// printResetID says what reset-id did, and how to re-link each child a
// forced change cut off.
func printResetID(e *env, path string, r chains.ResetIDResult) {
	if r.Old == r.New {
		fmt.Fprintf(e.stdout, "%s already has UUID %s: nothing changed\n", path, r.New)
		return
	}
	fmt.Fprintf(e.stdout, "%s: new UUID %s (was %s)\n", path, r.New, r.Old)
	for _, c := range r.Children {
		fmt.Fprintf(e.stdout, "%s no longer opens: re-link it with 'vhd set-parent --ignore-uuid %s %s'\n", c, c, path)
	}
}
