package chains

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// A merge writes a journal beside the child before it changes the target,
// and removes it last. While it exists the child must not be used: the
// target's timestamp has changed under it (harmlessly: every sector the
// merge copied is still shadowed by the child), and running the merge
// again finishes it.
type mergeJournal struct {
	Target     string   `json:"target"`
	TargetUUID string   `json:"target_uuid"`
	Remove     []string `json:"remove"` // layers deleted once the target is durable
}

func journalPath(child string) string { return child + ".merging" }

func readJournal(child string) (*mergeJournal, error) {
	b, err := os.ReadFile(journalPath(child))
	if err != nil {
		return nil, err
	}
	var j mergeJournal
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("%s: merge journal too large", journalPath(child))
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%s: damaged merge journal: %w", journalPath(child), err)
	}
	return &j, nil
}

// checkNoMergeJournal refuses to open a child whose merge was interrupted.
func checkNoMergeJournal(path string) error {
	j, err := readJournal(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%s: %w into %s; run `vhd merge %s` again to finish it", path, ErrMergeInterrupted, j.Target, path)
}
