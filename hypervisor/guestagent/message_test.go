package guestagent

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParseReply(t *testing.T) {
	for _, c := range []struct {
		in        string
		delimited bool
		id, ret   string
		class     string
		bad       bool
	}{
		{in: `{"return": {}}`, ret: `{}`},
		{in: `{"return": 3, "id": 17}`, ret: `3`, id: `17`},
		{in: "\xff{\"return\": 1234}", delimited: true, ret: `1234`},
		{in: "garbage\xff{\"return\": 9}", delimited: true, ret: `9`},
		{in: `{"error": {"class": "CommandNotFound", "desc": "Command guest-fsfreeze-freeze has been disabled"}, "id": 2}`, class: "CommandNotFound", id: `2`},
		{in: `{"return": "thawed", "id": null}`, ret: `"thawed"`},
		{in: `{"return": null}`, ret: `null`},
		{in: `{}`, bad: true},
		{in: `{"return": 1, "error": {"class": "x", "desc": "y"}}`, bad: true},
		{in: `[1, 2]`, bad: true},
		{in: `{"return": 1`, bad: true},
		{in: "\xff", bad: true},
		{in: ``, bad: true},
	} {
		r, err := ParseReply([]byte(c.in))
		if c.bad {
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("%q: want a protocol error, got %+v, %v", c.in, r, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		got := r.Error != nil && r.Error.Class == c.class || r.Error == nil && string(r.Return) == c.ret
		if !got || r.Delimited != c.delimited || r.ID != c.id {
			t.Errorf("%q: got %+v (error %+v)", c.in, r, r.Error)
		}
	}
}

// TestLineReaderTooLong: a line over the limit is dropped whole and
// reported; the lines after it read as they are.
func TestLineReaderTooLong(t *testing.T) {
	long := strings.Repeat("x", MaxLineBytes+10)
	in := "{\"return\": 1}\n" + long + "\n{\"return\": 2}\r\n{\"return\": 3"
	lr := newLineReader(strings.NewReader(in))
	want := []struct {
		line string
		err  error
	}{{`{"return": 1}`, nil}, {"", ErrTooLong}, {`{"return": 2}`, nil}, {"", io.ErrUnexpectedEOF}, {"", io.EOF}}
	for i, w := range want {
		line, err := lr.next()
		if !bytes.Equal(line, []byte(w.line)) || !errors.Is(err, w.err) {
			t.Fatalf("line %d: got %.40q, %v; want %q, %v", i, line, err, w.line, w.err)
		}
	}
	// Exactly at the limit is still a line.
	exact := strings.Repeat("y", MaxLineBytes)
	if line, err := newLineReader(strings.NewReader(exact + "\n")).next(); err != nil || len(line) != MaxLineBytes {
		t.Fatalf("a line of exactly MaxLineBytes: %d bytes, %v", len(line), err)
	}
}
