package guestagent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// A reply is one line (qemu-ga ends each with "\n"):
//
//	success    {"return": VALUE, "id": ID}
//	error      {"error": {"class": CLASS, "desc": TEXT}, "id": ID}
//	sync       0xFF {"return": N}      guest-sync-delimited's reply
//
// "id" is echoed from the command when it had one (this client sends
// numbers); an error for a line the agent could not parse has none.

// Sentinel is the byte that resets the agent's parser (host to agent)
// and comes before guest-sync-delimited's reply (agent to host).
const Sentinel = 0xFF

// MaxLineBytes bounds one reply line: the replies this client asks for
// are a few bytes, and a longer line is skipped whole, never buffered.
const MaxLineBytes = 64 << 10

// Reply is one decoded reply.
type Reply struct {
	// Delimited: the sentinel came before it (guest-sync-delimited's
	// reply). Bytes before the last sentinel on the line are dropped,
	// as the agent's protocol says.
	Delimited bool
	// ID is the echoed id as JSON text, or "" without one.
	ID string
	// Return is a success's value; Error an error's.
	Return json.RawMessage
	Error  *Error
}

// wire is the union of a reply's keys.
type wire struct {
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
	ID     json.RawMessage `json:"id"`
}

// ParseReply decodes one reply line: a pure function over its bytes,
// table-tested and fuzzed without a connection. A line that is not a
// JSON object with exactly one of "return" and "error" is an error.
func ParseReply(line []byte) (Reply, error) {
	var r Reply
	if i := bytes.LastIndexByte(line, Sentinel); i >= 0 {
		r.Delimited, line = true, line[i+1:]
	}
	var w wire
	if err := json.Unmarshal(line, &w); err != nil {
		return Reply{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	switch {
	case (w.Return != nil) == (w.Error != nil):
		return Reply{}, fmt.Errorf("%w: a line that is not one reply: %.80q", ErrProtocol, line)
	case w.Error != nil:
		r.Error = w.Error
	default:
		r.Return = w.Return
	}
	if len(w.ID) > 0 && !bytes.Equal(w.ID, []byte("null")) {
		r.ID = string(w.ID)
	}
	return r, nil
}

// lineReader reads the agent's lines, each at most MaxLineBytes: a
// longer one is read to its end and dropped (ErrTooLong), so the stream
// stays at a line's start and memory stays bounded.
type lineReader struct {
	br *bufio.Reader
}

func newLineReader(r io.Reader) *lineReader { return &lineReader{br: bufio.NewReaderSize(r, 4096)} }

// next returns the next line without its "\n".
func (l *lineReader) next() ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := l.br.ReadSlice('\n')
		if !tooLong && len(line)+len(chunk) > MaxLineBytes+1 {
			tooLong, line = true, nil
		}
		if !tooLong {
			line = append(line, chunk...)
		}
		switch {
		case err == nil && tooLong:
			return nil, fmt.Errorf("%w (%d bytes)", ErrTooLong, MaxLineBytes)
		case err == nil:
			return bytes.TrimRight(line, "\r\n"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && (len(line) > 0 || tooLong):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}
