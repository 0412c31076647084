package vhdgen

import (
	"fmt"
	"os"
	"path/filepath"
)

// Built is a case made into files, with what a reader must make of them.
type Built struct {
	Case  Case
	Files []*File // by layer: Files[0] is the image to open
	// Applied is false when the case's mutation did not apply (the files
	// are the unmutated ones).
	Applied bool
	View    *View // the expected view; nil when the image must be refused
	Refusal string
}

// Kind is "corrupt" for an image every reader must refuse, else "valid".
func (b *Built) Kind() string {
	if b.View == nil {
		return "corrupt"
	}
	return "valid"
}

// Names are the layers' file names, top first.
func (c *Case) Names() []string {
	var n []string
	for _, l := range c.Layers {
		n = append(n, l.Name)
	}
	return n
}

// Build makes the case's files and decodes them with the reference.
func (c Case) Build() (*Built, error) {
	files, lays := Build(c.Layers)
	b := &Built{Case: c, Files: files}
	if c.Mutation != nil {
		b.Applied = c.Mutation.Apply(files, c.Layers, lays)
		if !b.Applied {
			b.Case.Mutation = nil // an edit that does not apply is no part of the case
		}
	}
	v, err := Decode(files[0], b.lookup)
	switch {
	case IsRefused(err):
		b.Refusal = err.(*Refused).Why
	case err != nil:
		return nil, err
	default:
		b.View = v
	}
	return b, nil
}

func (b *Built) lookup(name string) (*File, bool) {
	for i, l := range b.Case.Layers {
		if l.Name == name {
			return b.Files[i], true
		}
	}
	return nil, false
}

// Write writes the case's files into dir (created) and returns the top
// image's path.
func (b *Built) Write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for i, l := range b.Case.Layers {
		if err := b.Files[i].WriteFile(filepath.Join(dir, l.Name)); err != nil {
			return "", fmt.Errorf("write case file: %w", err)
		}
	}
	return filepath.Join(dir, b.Case.Layers[0].Name), nil
}

// Describe is one line about the case: its layers and mutation.
func (c *Case) Describe() string {
	s := ""
	for i, l := range c.Layers {
		if i > 0 {
			s += " on "
		}
		s += fmt.Sprintf("%s %d", typeName(uint32(l.Type)), l.Size)
		if l.BlockSize > 0 {
			s += fmt.Sprintf("/%d", l.BlockSize)
		}
	}
	if c.Mutation != nil {
		s += fmt.Sprintf("; %s (layer %d, arg %d)", c.Mutation.Name, c.Mutation.Layer, c.Mutation.Arg)
	}
	return s
}
