package fuzzrun

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"vhdkit/fuzz/vhdgen"
)

// ManifestEntry is one generated case in manifest.json.
type ManifestEntry struct {
	ID          string           `json:"id"`
	Files       []string         `json:"files"` // top first, relative to the manifest
	Kind        string           `json:"kind"`  // valid or corrupt
	Expected    Expected         `json:"expected"`
	Mutation    *vhdgen.Mutation `json:"mutation,omitempty"`
	Description string           `json:"description"`
	Seed        uint64           `json:"seed"`
	Index       int              `json:"index"`
}

// Generate writes count cases of seed into dir (one folder each) and
// dir/manifest.json.
func Generate(dir string, seed uint64, count int, o vhdgen.Options) ([]ManifestEntry, error) {
	var entries []ManifestEntry
	for i := range count {
		c := vhdgen.Generate(seed, i, o)
		b, err := c.Build()
		if err != nil {
			continue // too big for the reference: not a case
		}
		id := fmt.Sprintf("%05d", i)
		if _, err := b.Write(filepath.Join(dir, id)); err != nil {
			return nil, err
		}
		e := ManifestEntry{ID: id, Kind: b.Kind(), Expected: ExpectedOf(b), Description: c.Describe(), Seed: seed, Index: i}
		if b.Applied {
			e.Mutation = c.Mutation
		}
		for _, n := range c.Names() {
			e.Files = append(e.Files, filepath.Join(id, n))
		}
		entries = append(entries, e)
	}
	data, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		return nil, err
	}
	return entries, os.WriteFile(filepath.Join(dir, "manifest.json"), append(data, '\n'), 0o644)
}
