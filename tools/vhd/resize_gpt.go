package main

import (
	"fmt"

	"vhdkit/engine"
	"vhdkit/vhdfs"
)

// minimumGPT is the size --to-minimum shrinks a GPT disk to: the end of
// its last partition plus the backup table that moves there. A disk at
// it already (or too close to it for the table to move) keeps its size.
func minimumGPT(img *engine.Image) (int64, error) {
	p, err := vhdfs.PlanGPTShrink(img)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", img.Name(), err)
	}
	if p.Minimal {
		return img.Size(), nil
	}
	return p.NewSize, nil
}

// moveGPTBackup runs, as chains.Resize's Prepare, on the image open for
// writing: it plans again (the image was read before it was locked) and
// moves the backup table to end at size, guest-data writes through the
// image (vhdfs.GPTShrink.MoveBackup says in which order, and why a crash
// anywhere leaves a valid table). The shrink that follows cuts off only
// zeros.
func moveGPTBackup(img *engine.Image, size int64) error {
	p, err := vhdfs.PlanGPTShrink(img)
	if err != nil {
		return fmt.Errorf("%s: %w", img.Name(), err)
	}
	if p.Minimal || p.NewSize != size {
		return fmt.Errorf("%s: the partition table changed while vhd resize read it; nothing changed, run it again", img.Name())
	}
	return p.MoveBackup(img)
}
