package main

import (
	"fmt"

	"vhdkit/engine"
)

// noteMetadataAfterData tells, after a resize or set-parent, when the
// image's new metadata had to go after its data blocks because there was
// no room before the first one (engine/relocate.go): the image is sound,
// but Xen's vhd-util check rejects it.
func noteMetadataAfterData(e *env, cmd, path string) {
	img, err := engine.Open(path, engine.Options{ReadOnly: true, NoLock: true})
	if err != nil {
		return
	}
	defer img.Close()
	if img.MetadataAfterData() {
		fmt.Fprintf(e.stderr, "vhd %s: note: there was no room before %s's first data block, so its new metadata follows the data; vhd, Windows and qemu read it, but Xen's vhd-util check rejects it (\"clobbers headers\"); 'vhd compact %s' lays the image out anew\n", cmd, path, path)
	}
}
