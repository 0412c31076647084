package chains

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// writeJournal makes the journal durable under its name: written to a
// temporary file and synced, renamed, and the folder synced.
func writeJournal(child string, j *mergeJournal) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	tmp := journalPath(child) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	// A journal that failed to reach the disk must not be renamed into
	// place: the merge would go on with nothing to resume from.
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, journalPath(child))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(child))
}

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
