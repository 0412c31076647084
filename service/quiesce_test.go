package service

import (
	"context"
	"testing"
)

type fakeQuiescer struct{}

func (fakeQuiescer) Freeze(context.Context, string) (func() error, bool, error) {
	return func() error { return nil }, true, nil
}

// The host hands out the Quiescer its runner set, and none after it is
// cleared: a backup must not ask a stopped guest's agent to freeze.
func TestHostQuiescerSetAndCleared(t *testing.T) {
	h := New(Config{})
	if q := h.currentQuiescer(); q != nil {
		t.Fatalf("a new host has quiescer %v, want none", q)
	}
	h.SetQuiescer(fakeQuiescer{})
	if _, ok := h.currentQuiescer().(fakeQuiescer); !ok {
		t.Fatalf("quiescer after SetQuiescer is %v", h.currentQuiescer())
	}
	h.SetQuiescer(nil)
	if q := h.currentQuiescer(); q != nil {
		t.Fatalf("quiescer after SetQuiescer(nil) is %v, want none", q)
	}
}
