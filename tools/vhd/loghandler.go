package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// userLog is the slog handler of commands whose log a person reads on
// their terminal (vhd serve, vhd run): one line per record, in the
// command's own voice, "vhd serve: warning: MESSAGE (key value, ...)",
// instead of time=... level=... key=value lines.
type userLog struct {
	w      io.Writer
	mu     *sync.Mutex
	prefix string
	min    slog.Level
	attrs  []slog.Attr
}

func newUserLog(w io.Writer, command string, min slog.Level) *slog.Logger {
	return slog.New(&userLog{w: w, mu: &sync.Mutex{}, prefix: "vhd " + command + ": ", min: min})
}

func (h *userLog) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *userLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(h.prefix)
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	}
	b.WriteString(strings.TrimPrefix(r.Message, "vhd: "))
	var kv []string
	add := func(a slog.Attr) {
		if a.Key != "" {
			kv = append(kv, fmt.Sprintf("%s %v", a.Key, a.Value.Resolve()))
		}
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool { add(a); return true })
	if len(kv) > 0 {
		b.WriteString(" (" + strings.Join(kv, ", ") + ")")
	}
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *userLog) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

// WithGroup flattens groups: a person reads the keys, not their nesting.
func (h *userLog) WithGroup(string) slog.Handler { return h }
