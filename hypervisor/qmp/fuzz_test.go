package qmp

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"
)

const fuzzGreeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}` + "\n"

// FuzzDecode feeds arbitrary bytes to the stream decoder: it must never
// panic or hang, and every message it returns is one of the four kinds
// with the field of its kind set.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(fuzzGreeting + `{"return": {}, "id": "vhd-1"}` + "\n"))
	f.Add([]byte(`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}{"error": {"class": "C", "desc": "d"}, "id": 3}`))
	f.Add([]byte(`{"return": [{"name": "a", "meta-type": "object", "members": []}]}` + "\n\n  {\"return\": 1}"))
	f.Add([]byte(`{"QMP": null}{"event": null}{"return": null, "id": {}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		d := newDecoder(bytes.NewReader(in))
		for range 1000 {
			m, err := d.next()
			if err != nil {
				return
			}
			ok := (m.Kind == KindGreeting && m.Greeting != nil) || (m.Kind == KindEvent && m.Event != nil) ||
				(m.Kind == KindError && m.Error != nil) || (m.Kind == KindReturn && m.Return != nil)
			if !ok {
				t.Fatalf("message of kind %d without its field: %+v", m.Kind, m)
			}
		}
	})
}

// FuzzClient runs the whole client against a peer that greets, then
// sends arbitrary bytes: the handshake and a command must end (with a
// reply or an error) without a panic or a hang.
func FuzzClient(f *testing.F) {
	f.Add([]byte(`{"return": {}, "id": "vhd-1"}{"event": "RESUME"}{"return": 5, "id": "vhd-2"}`))
	f.Add([]byte(`{"return": {}, "id": "vhd-1"}{"error": {"class": "x", "desc": "y"}, "id": "vhd-2"}`))
	f.Add([]byte(`{"return": {}, "id": "vhd-1"}{"QMP": {}}{"return": {}, "id": "vhd-9"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		go func() {
			server.Write(append([]byte(fuzzGreeting), in...))
			server.Close()
		}()
		go func() { // take what the client sends
			buf := make([]byte, 4096)
			for {
				if _, err := server.Read(buf); err != nil {
					return
				}
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := New(ctx, client, nil)
		if err != nil {
			return
		}
		c.Execute(ctx, "query-status", nil, nil)
		go func() {
			for range c.Events() {
			}
		}()
		c.Close()
	})
}
