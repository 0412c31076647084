package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"os"

	"vhdkit/chains"
)

// finishUndo applies the undo policy once the disks are closed: after a
// clean poweroff, commit merges each undo disk into its image and
// discard deletes it (Virtual Server's choices at shutdown); keep leaves
// them for 'vhd undo'. After a run that did not end cleanly every undo
// disk is kept, whatever the policy: what it holds is the user's to
// judge, and keeping it loses nothing. An undo disk that held no changes
// is gone already (closing the chain that made it deleted it).
func (vm *VM) finishUndo(ctx context.Context, clean bool) error {
	var errs []error
	for _, d := range vm.disks {
		if !d.undo {
			continue
		}
		vud := chains.UndoPath(d.Path)
		if _, err := os.Stat(vud); errors.Is(err, os.ErrNotExist) {
			// Closing the disk deleted it: it held nothing.
			vm.log.Info("no changes: the undo disk was removed", "undo_disk", vud)
			continue
		}
		switch {
		case vm.cfg.Undo == UndoKeep:
			vm.log.Info("undo disk kept", "undo_disk", vud)
		case !clean:
			vm.log.Warn("the run did not end with a clean poweroff: undo disk kept ('vhd undo commit|discard' decides)", "undo_disk", vud)
		case vm.cfg.Undo == UndoCommit:
			// A merge is crash-safe and resumable; a signal during it
			// must not leave it half-done, so it does not take ctx's end.
			if _, err := chains.Commit(context.WithoutCancel(ctx), d.Path, chains.MergeOptions{Open: vm.cfg.Chains}); err != nil {
				errs = append(errs, fmt.Errorf("commit the undo disk of %s: %w", d.Path, err))
			}
		case vm.cfg.Undo == UndoDiscard:
			if err := chains.Discard(d.Path); err != nil {
				errs = append(errs, fmt.Errorf("discard the undo disk of %s: %w", d.Path, err))
			}
		}
	}
	return errors.Join(errs...)
}
