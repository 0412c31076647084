package qmp

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// A QMP message is one JSON object; which kind it is shows in its keys
// (QEMU's docs/interop/qmp-spec):
//
//	greeting  {"QMP": {"version": {...}, "capabilities": [...]}}
//	success   {"return": VALUE, "id": ID}
//	error     {"error": {"class": CLASS, "desc": TEXT}, "id": ID}
//	event     {"event": NAME, "data": {...}, "timestamp": {"seconds": S, "microseconds": U}}
//
// "id" is echoed from the command as any JSON value; this client sends
// strings. A reply to a command QEMU could not parse carries no id.

// Kind says what a message is.
type Kind int

const (
	KindGreeting Kind = iota + 1
	KindReturn
	KindError
	KindEvent
)

// Message is one decoded QMP message.
type Message struct {
	Kind Kind
	// ID is the id of a reply, as the JSON text QEMU echoed (a string
	// keeps its quotes); empty when there was none.
	ID string
	// Return is a success reply's value.
	Return json.RawMessage
	// Error is an error reply's error.
	Error *Error
	// Event is an event.
	Event *Event
	// Greeting is the greeting's version and capabilities.
	Greeting *Greeting
}

// Greeting is what QEMU says when a client connects.
type Greeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

// Event is an asynchronous notification from QEMU.
type Event struct {
	Name string
	Data json.RawMessage
	// Seconds and Micros are QEMU's timestamp of the event.
	Seconds, Micros int64
}

// Error is a command's failure as QEMU reports it.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp: %s (%s)", e.Desc, e.Class) }

// wire is the union of every message's keys.
type wire struct {
	QMP       *Greeting       `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	Event     *string         `json:"event"`
	Data      json.RawMessage `json:"data"`
	ID        json.RawMessage `json:"id"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// ParseMessage decodes one QMP message: a pure function over its bytes,
// so it is table-tested and fuzzed without a connection. A message that
// is not a JSON object, or is none of the four kinds, is an error.
func ParseMessage(raw []byte) (Message, error) {
	var w wire
	if err := json.Unmarshal(raw, &w); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	m := Message{}
	if len(w.ID) > 0 && !bytes.Equal(w.ID, []byte("null")) {
		m.ID = string(w.ID)
	}
	switch {
	case w.QMP != nil:
		m.Kind, m.Greeting = KindGreeting, w.QMP
	case w.Event != nil:
		m.Kind = KindEvent
		m.Event = &Event{Name: *w.Event, Data: w.Data}
		if w.Timestamp != nil {
			m.Event.Seconds, m.Event.Micros = w.Timestamp.Seconds, w.Timestamp.Microseconds
		}
	case w.Error != nil:
		m.Kind, m.Error = KindError, w.Error
	case w.Return != nil:
		m.Kind, m.Return = KindReturn, w.Return
	default:
		return Message{}, fmt.Errorf("%w: a message that is no greeting, reply or event: %.80s", ErrProtocol, raw)
	}
	return m, nil
}
