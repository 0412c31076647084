package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/internal/shq"
)

var treeCmd = &command{
	name:    "tree",
	args:    "[--json] [flags] FOLDER...",
	summary: "show every image under folders as a forest of parents and children",
	doc: `Finds every .vhd, .vud and .avhd file under the folders (subfolders
included) and links each differencing image to its parent with the
rules 'vhd' uses to open it, reading only each image's footer and
header. Broken links are marked: parent missing, UUID, size or
timestamp mismatch, outside the allowed folders, parents that form a
cycle, a parent an unfinished merge is writing. A child whose link is
broken is shown as a root, with the reason. When a parent is not
found, the tree lists where it looked (each locator and name, and what
the file there was) and, when a scanned image has the UUID the child
records (the parent moved or was renamed), the 'vhd set-parent' that
re-links the child to it; if that image was written after the child
was made (its time is not the one the child recorded), the tree says
so, with both times, and offers 'vhd set-parent
--accept-modified-parent' only as a choice for data known unchanged.
Images a merge left unfinished are marked
with the command that finishes it.

JSON: a list of nodes {path, type, uuid, virtual_size, parent,
parent_uuid, parent_name, broken, tried, parent_found,
parent_found_modified, merge_interrupted, error, children: [...]}.

` + chainHelp,
	setup: func(fs *pflag.FlagSet) runFunc {
		cf := addChainFlags(fs)
		asJSON := fs.Bool("json", false, "print the forest as JSON")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usageErr("missing FOLDER")
			}
			roots, err := chains.Scan(args, cf.options(true))
			if err != nil {
				return err
			}
			if *asJSON {
				if roots == nil {
					roots = []*chains.Node{}
				}
				return writeJSON(e, roots)
			}
			if len(roots) == 0 {
				fmt.Fprintf(e.stdout, "no images under %s\n", strings.Join(args, ", "))
			}
			for _, r := range roots {
				printNode(e, r, "", "")
			}
			return nil
		}
	},
}

func printNode(e *env, n *chains.Node, first, rest string) {
	desc := fmt.Sprintf("%s (%s, %s)", n.Path, n.Type, human(n.Size))
	switch {
	case n.Error != "":
		desc = fmt.Sprintf("%s (cannot open: %s)", n.Path, n.Error)
	case n.Broken != "":
		desc += fmt.Sprintf(" [BROKEN: %s]", n.Broken)
	}
	if n.Merge != "" {
		desc += fmt.Sprintf(" [MERGE INTERRUPTED: %s]", n.Merge)
	}
	fmt.Fprintf(e.stdout, "%s%s\n", first, desc)
	for _, l := range brokenDetail(n) {
		fmt.Fprintf(e.stdout, "%s    %s\n", rest, l)
	}
	for i, c := range n.Children {
		if i == len(n.Children)-1 {
			printNode(e, c, rest+"└── ", rest+"    ")
		} else {
			printNode(e, c, rest+"├── ", rest+"│   ")
		}
	}
}

// brokenDetail is what the tree prints under an image whose parent was
// not found: where it was looked for, and what to re-link it to.
func brokenDetail(n *chains.Node) []string {
	if n.Tried == nil {
		return nil
	}
	lines := append([]string{fmt.Sprintf("the child records parent %q, UUID %s", n.ParentName, n.ParentUUID)}, n.Tried...)
	if n.Found != "" && n.FoundModified != "" {
		return append(lines, fmt.Sprintf("%s has that UUID but %s", n.Found, n.FoundModified),
			fmt.Sprintf("only if you know its data did not change: vhd set-parent --accept-modified-parent %s %s", shq.Quote(n.Path), shq.Quote(n.Found)))
	}
	if n.Found != "" {
		return append(lines, fmt.Sprintf("%s has that UUID: vhd set-parent %s %s", n.Found, shq.Quote(n.Path), shq.Quote(n.Found)))
	}
	return append(lines, fmt.Sprintf("no image scanned has that UUID: find the parent and run vhd set-parent %s PARENT", shq.Quote(n.Path)))
}
