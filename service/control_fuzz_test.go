package service

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzControlRequest feeds arbitrary bodies to the request decoder and
// the checks of names and paths: never a panic, only bad_request or
// too_large errors, and a body that decodes re-encodes to a body that
// decodes to the same request.
func FuzzControlRequest(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `{"new_top": "/a/b.vhd"}`, `{"layer": ""}`,
		`{"name": "disk", "image": "/x.vhd", "read_only": true, "fuse": "/mnt/x"}`,
		`{"name": "bk", "view_of": "disk", "layer": "/a/base.vhd"}`,
		`{"name": "a/b"}`, `{"name": ".."}`, `{"name": "\u0000"}`, `{"new_top": 1}`,
		`{"x": 1}`, `{} {}`, `{"name": "` + strings.Repeat("n", 300) + `"}`, `{"name": "\xff"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var add AddRequest
		if aerr := decodeBody(bytes.NewReader(body), &add); aerr != nil {
			if aerr.Code != CodeBadRequest && aerr.Code != CodeTooLarge {
				t.Fatalf("decode error code %q: %v", aerr.Code, aerr)
			}
		} else {
			roundTrip(t, add)
			checkAdd(t, add)
		}
		var snap SnapshotRequest
		if aerr := decodeBody(bytes.NewReader(body), &snap); aerr == nil {
			if p, aerr := absFile("new_top", snap.NewTop, false); aerr == nil && (!filepath.IsAbs(p) || strings.ContainsRune(p, 0)) {
				t.Fatalf("absFile accepted %q as %q", snap.NewTop, p)
			}
		}
	})
}

// checkAdd: a name checkName accepts is usable as an NBD name and a
// folder name.
func checkAdd(t *testing.T, req AddRequest) {
	if aerr := checkName(req.Name); aerr == nil {
		n := req.Name
		if n == "" || len(n) > maxName || !utf8.ValidString(n) || strings.ContainsAny(n, "/\x00") || n == "." || n == ".." || filepath.Base(n) != n {
			t.Fatalf("checkName accepted %q", n)
		}
	} else if aerr.Code != CodeBadRequest || strings.Contains(aerr.Message, "\n") {
		t.Fatalf("checkName: %+v", aerr)
	}
}

func roundTrip(t *testing.T, req AddRequest) {
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var again AddRequest
	if aerr := decodeBody(bytes.NewReader(b), &again); aerr != nil || again != req {
		t.Fatalf("%s decodes to %+v (%v), want %+v", b, again, aerr, req)
	}
}
