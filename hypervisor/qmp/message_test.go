package qmp

import (
	"errors"
	"testing"
)

func TestParseMessage(t *testing.T) {
	cases := []struct {
		in      string
		kind    Kind
		id      string
		wantErr bool
	}{
		{in: `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}`, kind: KindGreeting},
		{in: `{"return": {}, "id": "vhd-1"}`, kind: KindReturn, id: `"vhd-1"`},
		{in: `{"return": [1, 2]}`, kind: KindReturn},
		{in: `{"error": {"class": "GenericError", "desc": "nope"}, "id": 7}`, kind: KindError, id: "7"},
		{in: `{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}`, kind: KindEvent},
		{in: `{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 1, "microseconds": 2}}`, kind: KindEvent},
		{in: `{"return": {}, "id": null}`, kind: KindReturn},
		{in: `{}`, wantErr: true},
		{in: `[1]`, wantErr: true},
		{in: `{"event": 5}`, wantErr: true},
		{in: `{"error": "text"}`, wantErr: true},
		{in: `{"return"`, wantErr: true},
	}
	for _, c := range cases {
		m, err := ParseMessage([]byte(c.in))
		if c.wantErr {
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("%s: got %v, want a protocol error", c.in, err)
			}
			continue
		}
		if err != nil || m.Kind != c.kind || m.ID != c.id {
			t.Errorf("%s: got kind %d id %q err %v, want kind %d id %q", c.in, m.Kind, m.ID, err, c.kind, c.id)
		}
	}
}

func TestGreetingVersion(t *testing.T) {
	m, err := ParseMessage([]byte(`{"QMP": {"version": {"qemu": {"micro": 3, "minor": 2, "major": 7}, "package": "x"}, "capabilities": []}}`))
	if err != nil {
		t.Fatal(err)
	}
	v := m.Greeting.Version.QEMU
	if v.Major != 7 || v.Minor != 2 || v.Micro != 3 {
		t.Fatalf("version %+v", v)
	}
}
