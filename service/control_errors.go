package service

import (
	"context"
	"errors"
	"io/fs"
	"net/http"

	"vhdkit/chains"
	"vhdkit/engine"
)

// Error codes of the control socket (APIError.Code), with the HTTP status
// each comes with. Stable: scripts test them.
const (
	CodeBadRequest       = "bad_request"        // 400: malformed JSON, a field missing or wrong
	CodeTooLarge         = "too_large"          // 413: a body over the limit
	CodeForbidden        = "forbidden"          // 403: a connection from another user
	CodeNotFound         = "not_found"          // 404: no such route, export, job, layer or file
	CodeMethod           = "method_not_allowed" // 405
	CodeExists           = "exists"             // 409: the export name or file exists already
	CodeBusy             = "busy"               // 409: a live operation runs on the export
	CodeLayerInUse       = "layer_in_use"       // 409: a read-only view holds the layer
	CodeReadOnly         = "read_only"          // 409: the export is read-only, or no chain
	CodeNoUndo           = "no_undo"            // 409: the export is not served on an undo disk
	CodeRefused          = "refused"            // 409: other images depend on what would change
	CodeLocked           = "locked"             // 409: another process holds the image
	CodeMergeInterrupted = "merge_interrupted"  // 409: a merge stopped half-way (vhd merge finishes it)
	CodeNotRunning       = "not_running"        // 409: the job has ended already, or the guest is not running
	CodeCancelled        = "cancelled"          // a job's error: cancelled before it changed anything
	CodeBadImage         = "bad_image"          // 422: damaged, or not a VHD
	CodeStopping         = "stopping"           // 503: the server is shutting down
	CodeFailed           = "failed"             // 500: anything else (I/O error...)
)

// httpStatus is the HTTP status each code comes with.
var httpStatus = map[string]int{
	CodeBadRequest: http.StatusBadRequest, CodeTooLarge: http.StatusRequestEntityTooLarge,
	CodeForbidden: http.StatusForbidden, CodeNotFound: http.StatusNotFound,
	CodeMethod: http.StatusMethodNotAllowed, CodeExists: http.StatusConflict,
	CodeBusy: http.StatusConflict, CodeLayerInUse: http.StatusConflict,
	CodeReadOnly: http.StatusConflict, CodeNoUndo: http.StatusConflict,
	CodeRefused: http.StatusConflict, CodeLocked: http.StatusConflict,
	CodeMergeInterrupted: http.StatusConflict, CodeNotRunning: http.StatusConflict,
	CodeCancelled: http.StatusConflict,
	CodeNoVM:      http.StatusNotFound,
	CodeBadImage:  http.StatusUnprocessableEntity, CodeStopping: http.StatusServiceUnavailable,
	CodeFailed: http.StatusInternalServerError,
}

// apiErr makes an error reply of a code and a message.
func apiErr(code, msg string) *APIError { return &APIError{Code: code, Message: msg} }

// Error makes APIError an error: the message alone, one line.
func (e *APIError) Error() string { return e.Message }

// status is the HTTP status of e's code.
func (e *APIError) status() int {
	if s, ok := httpStatus[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// classify turns an error from the engine, the chains or the host into
// an error reply, its code chosen by what the error is (errors.Is), its
// message the error's own.
func classify(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	return apiErr(codeOf(err), oneLine(err.Error()))
}

// codeOf picks the code for err: the first kind it matches.
func codeOf(err error) string {
	kinds := []struct {
		is   error
		code string
	}{
		{ErrStopping, CodeStopping},
		{ErrExportExists, CodeExists},
		{ErrNoExport, CodeNotFound},
		{chains.ErrMergeInterrupted, CodeMergeInterrupted},
		{chains.ErrLayerInUse, CodeLayerInUse},
		{chains.ErrHasChildren, CodeRefused},
		{chains.ErrHasUndoDisk, CodeRefused},
		{engine.ErrLocked, CodeLocked},
		{engine.ErrReadOnly, CodeReadOnly},
		{engine.ErrCorrupt, CodeBadImage},
		{engine.ErrOtherFormat, CodeBadImage},
		{engine.ErrUnsupportedImage, CodeBadImage},
		{fs.ErrNotExist, CodeNotFound},
		{fs.ErrExist, CodeExists},
		{context.Canceled, CodeStopping},
	}
	for _, k := range kinds {
		if errors.Is(err, k.is) {
			return k.code
		}
	}
	return CodeFailed
}
