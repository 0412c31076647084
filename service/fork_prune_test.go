package service

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestPruneLogs: of 30 logs left by failed servers, the 20 newest stay,
// and of the 10 older ones only those written within the week; files
// that are not logs are left alone. Before, every failed server's log
// stayed for ever.
func TestPruneLogs(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	for i := range 30 {
		p := filepath.Join(dir, fmt.Sprintf("serve-%02d.log", i))
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		age := time.Duration(i) * time.Hour // 0..19: newest
		if i >= 25 {
			age = time.Duration(i) * 24 * time.Hour // 25..29: weeks old
		}
		os.Chtimes(p, now.Add(-age), now.Add(-age))
	}
	other := filepath.Join(dir, "notes.txt")
	os.WriteFile(other, nil, 0o600)
	os.Chtimes(other, now.Add(-1000*time.Hour), now.Add(-1000*time.Hour))

	pruneLogs(dir, keepLogs, keepLogsFor)
	for i := range 30 {
		_, err := os.Stat(filepath.Join(dir, fmt.Sprintf("serve-%02d.log", i)))
		if gone := err != nil; gone != (i >= 25) {
			t.Errorf("log %d: gone %v, want gone only for 25..29 (older than a week, beyond the newest 20)", i, gone)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a file that is not a log was removed: %v", err)
	}
}
