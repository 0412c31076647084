package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of help and messages")

// TestHelpGolden: 'vhd help' and 'vhd help COMMAND' for every command
// are what testdata/golden holds. A change to help text shows in review
// as a change to these files; 'go test ./tools/vhd -run TestHelpGolden
// -update' rewrites them.
func TestHelpGolden(t *testing.T) {
	check := func(name string, r result) {
		t.Helper()
		path := filepath.Join("testdata", "golden", name+".txt")
		got := r.stdout
		if *updateGolden {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create it)", err)
		}
		if got != string(want) {
			t.Errorf("%s differs from %s (run with -update if the change is meant):\n%s", name, path, got)
		}
	}
	check("help", vhdOK(t, "help"))
	for _, c := range commands {
		check("help-"+c.name, vhdOK(t, "help", c.name))
	}
	// The main messages: a usage error, an unknown command, a missing file.
	check("usage-error", result{stdout: vhdCode(t, exitUsage, "create", "x.vhd").stderr})
	check("unknown-command", result{stdout: vhdCode(t, exitUsage, "nosuch").stderr})
	check("missing-file", result{stdout: vhdCode(t, exitFailed, "info", "/nonexistent/d.vhd").stderr})
}
