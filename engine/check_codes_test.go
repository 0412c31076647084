package engine

import (
	"os"
	"regexp"
	"slices"
	"testing"
)

// TestProblemCodesDocumented: docs/CLI.md lists every problem code Check
// can report, and no other, so scripts can rely on the list.
func TestProblemCodesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/CLI.md")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z-]+)` \\| (error|warning)").FindAllSubmatch(doc, -1) {
		listed = append(listed, string(m[1]))
	}
	for _, c := range problemCodes {
		if !slices.Contains(listed, c) {
			t.Errorf("problem code %s is missing from docs/CLI.md", c)
		}
	}
	for _, c := range listed {
		if !slices.Contains(problemCodes, c) {
			t.Errorf("docs/CLI.md lists problem code %s, which Check does not report", c)
		}
	}
	if len(listed) != len(problemCodes) {
		t.Errorf("docs/CLI.md lists %d codes, Check has %d", len(listed), len(problemCodes))
	}
}
