package chains

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// TestLiveMergeCopiedJournalFails: when the journal that marks a live
// commit's copy done cannot be written, the top keeps serving only if
// the journal could be put back without the mark (else a resumed merge
// could delete writes the top took after); if that fails too, the top is
// closed, so no write is acknowledged that a resume could lose.
func TestLiveMergeCopiedJournalFails(t *testing.T) {
	for _, restoreFails := range []bool{false, true} {
		dir := t.TempDir()
		base, model := newLiveBase(t, dir, 8<<20, 21)
		c, err := Open(base, Options{})
		if err != nil {
			t.Fatal(err)
		}
		top := filepath.Join(dir, "top.vhd")
		if err := c.Snapshot(top); err != nil {
			t.Fatal(err)
		}
		real := writeJournal
		boom := errors.New("injected journal failure")
		copiedFailed := false
		// The Copied journal is renamed into place, then its folder
		// sync fails: on disk it may say Copied.
		writeJournal = func(child string, j *mergeJournal) error {
			switch {
			case j.Copied:
				copiedFailed = true
				real(child, j)
				return boom
			case copiedFailed && restoreFails:
				return boom
			}
			return real(child, j)
		}
		_, err = c.Merge(context.Background(), "", nil)
		writeJournal = real
		if !errors.Is(err, boom) || !errors.Is(err, ErrMergeInterrupted) {
			t.Fatalf("restoreFails=%v: merge: %v", restoreFails, err)
		}
		j, jerr := readJournal(top)
		if restoreFails {
			if _, werr := c.WriteAt(make([]byte, 512), 0); werr == nil {
				t.Error("the top still takes writes with a journal nothing is known of")
			}
			c.Close()
			continue
		}
		if jerr != nil || j.Copied {
			t.Fatalf("journal after the failure: %+v, %v; want it back without Copied", j, jerr)
		}
		p := randBytes(rand.New(rand.NewPCG(1, 2)), 4096)
		if _, err := c.WriteAt(p, 4096); err != nil {
			t.Fatal(err)
		}
		copy(model[4096:], p)
		verify(t, c, model, "the top serving after the failure")
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		// The merge the error names finishes it, keeping that write.
		if _, err := Merge(context.Background(), top, MergeOptions{}); err != nil {
			t.Fatal(err)
		}
		openVerify(t, base, model, Options{})
		checkClean(t, base)
	}
}
