package chains

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"vhdkit/internal/shq"
)

// A merge leaves two files while it runs, both written durably before
// the target is touched and removed last:
//
//   - the journal, CHILD.merging, beside the child: what the merge does
//     (the target, the layers it deletes, the children it moves onto the
//     target). Running the merge again reads it and finishes the job.
//   - the mark, TARGET.merge-target, beside the target: which child is
//     being merged into it. The target is half-written until the merge
//     finishes, so every open of it, or of a chain through it, must stop
//     and say which merge to finish.
//
// While either exists, Open refuses the layer with ErrMergeInterrupted.
type mergeJournal struct {
	Target     string   `json:"target"`
	TargetUUID string   `json:"target_uuid"`
	Remove     []string `json:"remove"`           // layers deleted once the target is durable
	Relink     []string `json:"relink,omitempty"` // children of the merged child, moved onto the target before any deletion
	// Copied says the target holds all the merged data and is durable:
	// only the re-links and deletions remain. A live merge sets it before
	// the target takes writes of its own, after which copying again
	// would overwrite them (live_merge.go).
	Copied bool `json:"copied,omitempty"`
}

// targetMark is what the mark beside a merge target holds.
type targetMark struct {
	Child string `json:"child"` // absolute path of the merge's child
}

func journalPath(child string) string { return child + ".merging" }

func markPath(target string) string { return target + ".merge-target" }

// writeJournal makes the journal durable under its name. A variable only
// so tests can make it fail.
var writeJournal = func(child string, j *mergeJournal) error {
	return writeDurableJSON(journalPath(child), j)
}

// writeMark marks target as the target of child's merge, durably.
func writeMark(target, child string) error {
	return writeDurableJSON(markPath(target), &targetMark{Child: absPath(child)})
}

// writeDurableJSON writes v to path: to a temporary file, synced, renamed
// into place, and the folder synced, so path holds all of it or nothing.
func writeDurableJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	// A file that failed to reach the disk must not be renamed into
	// place: the merge would go on with nothing to resume from.
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func readJournal(child string) (*mergeJournal, error) {
	var j mergeJournal
	if err := readSmallJSON(journalPath(child), "merge journal", &j); err != nil {
		return nil, err
	}
	return &j, nil
}

func readMark(target string) (*targetMark, error) {
	var m targetMark
	if err := readSmallJSON(markPath(target), "merge target mark", &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// readSmallJSON reads a journal or mark of at most 1 MiB.
func readSmallJSON(path, what string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err != nil {
		return fmt.Errorf("%s: read %s: %w", path, what, err)
	}
	if len(b) > 1<<20 {
		return fmt.Errorf("%s: %s too large: vhd did not write it; move it away", path, what)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: damaged %s: %w", path, what, err)
	}
	return nil
}

// UnfinishedMerge says (with an error matching ErrMergeInterrupted)
// whether path is the child or the target of a merge that did not finish,
// and which command finishes it; nil if it is neither.
func UnfinishedMerge(path string) error { return mergeUnderway(path) }

func mergeUnderway(path string) error {
	note, err := mergeNote(path)
	if err != nil || note == "" {
		return err
	}
	return fmt.Errorf("%s: %w (%s)", path, ErrMergeInterrupted, note)
}

// mergeNote describes the unfinished merge path is part of ("" if none):
// which way it was going and the command that finishes it.
func mergeNote(path string) (string, error) {
	if j, err := readJournal(path); err == nil {
		return fmt.Sprintf("it was being merged into %s; run `vhd merge %s` again to finish", j.Target, shq.Quote(path)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if m, err := readMark(path); err == nil {
		return fmt.Sprintf("%s was being merged into it; run `vhd merge %s` again to finish", m.Child, shq.Quote(m.Child)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	return "", nil
}

// removeMergeFiles removes the mark, then the journal, syncing each
// folder: the journal goes last, so a crash between leaves it to finish
// the job (a mark without a journal would refuse the target forever).
func removeMergeFiles(child, target string) error {
	for _, p := range []string{markPath(target), journalPath(child)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := syncDir(filepath.Dir(p)); err != nil {
			return err
		}
		reachPoint("remove:merge-file")
	}
	// What a process killed while rewriting one of them left: garbage
	// (never renamed into place), which the merge's end takes along.
	for _, p := range []string{markPath(target), journalPath(child)} {
		os.Remove(p + ".tmp")
	}
	return nil
}
