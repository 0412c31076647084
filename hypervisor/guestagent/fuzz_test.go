package guestagent

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"
)

// FuzzParseReply: any line either decodes to exactly one of a value and
// an error, or is a protocol error; never a panic.
func FuzzParseReply(f *testing.F) {
	f.Add([]byte(`{"return": {}, "id": 7}`))
	f.Add([]byte("\xff{\"return\": 1234}"))
	f.Add([]byte(`{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}`))
	f.Add([]byte(`{"return": null, "error": null, "id": {}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseReply(line)
		if err != nil {
			return
		}
		if (r.Return == nil) == (r.Error == nil) {
			t.Fatalf("%q: reply %+v has not exactly one of return and error", line, r)
		}
		if r.Delimited != bytes.Contains(line, []byte{Sentinel}) {
			t.Fatalf("%q: delimited %v", line, r.Delimited)
		}
	})
}

// FuzzClient runs every call against a peer that sends arbitrary bytes
// and then closes: each call ends (with a reply or an error) within its
// deadline, with no panic and no hang.
func FuzzClient(f *testing.F) {
	f.Add([]byte("{\"error\": {\"class\": \"GenericError\", \"desc\": \"stray\"}}\n\xff{\"return\": 1}\n{\"return\": {}}\n"))
	f.Add([]byte("\xff{\"return\": 0}\n{\"return\": 2}\n{\"return\": \"frozen\", \"id\": 1}\n"))
	f.Add([]byte("{\"return\"\n\xff\xff\n{\"error\": null}\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		go func() {
			server.Write(in)
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
		c := New(client, nil)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		c.Ping(ctx)
		c.FreezeFS(ctx)
		c.FreezeStatus(ctx)
		c.ThawFS(ctx)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("the calls took %v", d)
		}
	})
}
