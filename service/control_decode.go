package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Requests are small JSON objects; anything else is refused with a
// bad_request naming what is wrong, before anything is opened or
// changed. The body is read through a limit, so no request makes the
// server allocate more than maxBody.

// maxBody bounds a request body: paths and names, nothing more.
const maxBody = 64 << 10

// maxName bounds an export name: NBD allows 4096 bytes, and a name is a
// folder name under a FUSE root.
const maxName = 255

// decodeBody decodes one JSON object of at most maxBody bytes into v,
// refusing unknown fields and anything after the object. An empty body
// is an empty object.
func decodeBody(r io.Reader, v any) *APIError {
	lr := &io.LimitedReader{R: r, N: maxBody + 1}
	dec := json.NewDecoder(lr)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	switch {
	case lr.N <= 0:
		return apiErr(CodeTooLarge, fmt.Sprintf("the request body is over %d bytes: requests hold names and paths only", maxBody))
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return apiErr(CodeBadRequest, "the request body is not the JSON object expected: "+oneLine(err.Error()))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if lr.N <= 0 {
			return apiErr(CodeTooLarge, fmt.Sprintf("the request body is over %d bytes: requests hold names and paths only", maxBody))
		}
		return apiErr(CodeBadRequest, "the request body holds more than one JSON value: send one object")
	}
	return nil
}

// checkName checks an export name: what NBD clients ask for and, under
// a FUSE root, a folder's name.
func checkName(name string) *APIError {
	switch {
	case name == "":
		return apiErr(CodeBadRequest, `"name" is missing: give the export a name`)
	case len(name) > maxName:
		return apiErr(CodeBadRequest, fmt.Sprintf("export name of %d bytes: at most %d", len(name), maxName))
	case !utf8.ValidString(name):
		return apiErr(CodeBadRequest, "the export name is not valid UTF-8")
	case name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return apiErr(CodeBadRequest, fmt.Sprintf("export name %q: it names a folder under a FUSE root, so it may not be . or .. or hold / or NUL", name))
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return apiErr(CodeBadRequest, fmt.Sprintf("export name %q holds a control character", name))
		}
	}
	return nil
}

// absFile checks a path a request names (field says which): absolute,
// since the server's folder is not the client's, and with no NUL. It
// returns it cleaned. An empty path is allowed when optional.
func absFile(field, p string, optional bool) (string, *APIError) {
	switch {
	case p == "" && optional:
		return "", nil
	case p == "":
		return "", apiErr(CodeBadRequest, fmt.Sprintf("%q is missing", field))
	case strings.ContainsRune(p, 0):
		return "", apiErr(CodeBadRequest, fmt.Sprintf("%q holds a NUL byte", field))
	case !filepath.IsAbs(p):
		return "", apiErr(CodeBadRequest, fmt.Sprintf("%q is %q, a relative path: send an absolute one (the server's folder is not yours)", field, p))
	}
	return filepath.Clean(p), nil
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
