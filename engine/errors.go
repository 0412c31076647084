package engine

import (
	"errors"
	"fmt"
)

// ErrCorrupt is matched (errors.Is) by every error that means the image's
// bytes are wrong, as opposed to the file being unreadable. A caller can
// tell "this image is damaged, try vhd repair" from "the disk failed".
var ErrCorrupt = errors.New("corrupt image")

// Errors callers test for.
var (
	ErrReadOnly         = errors.New("vhd: image is open read-only")
	ErrOutOfRange       = errors.New("vhd: request beyond the end of the disk")
	ErrClosed           = errors.New("vhd: image is closed")
	ErrLocked           = errors.New("vhd: image is in use")
	ErrNoParent         = errors.New("vhd: differencing image opened without its parent")
	ErrUnsupportedImage = errors.New("vhd: unsupported image")
)

// CorruptError says which field of which structure is wrong and where it
// sits in the file.
type CorruptError struct {
	Struct string // "footer", "dynamic header", "BAT", "parent locator", ...
	Field  string
	Offset int64 // file offset of the field, -1 if unknown
	Msg    string
	// Code is the code Check reports this damage under (Problem.Code),
	// or "" for damage found only while reading (a file cut short while
	// open, a parent smaller than its child).
	Code string
}

func (e *CorruptError) Error() string {
	where := ""
	if e.Offset >= 0 {
		where = fmt.Sprintf(" at offset %#x", e.Offset)
	}
	if e.Field == "" {
		return fmt.Sprintf("vhd: %s%s: %s", e.Struct, where, e.Msg)
	}
	return fmt.Sprintf("vhd: %s %s%s: %s", e.Struct, e.Field, where, e.Msg)
}

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func corrupt(structure, field string, off int64, format string, args ...any) error {
	return &CorruptError{Struct: structure, Field: field, Offset: off, Msg: fmt.Sprintf(format, args...), Code: structCodes[structure]}
}

// structCodes are the problem codes of damage to each structure. The BAT
// is missing: its problems are told apart (batProblems).
var structCodes = map[string]string{
	"footer":         CodeFooterInvalid,
	"dynamic header": CodeHeaderInvalid,
	"parent locator": CodeLocatorInvalid,
}

// ErrNoFooter is matched (errors.Is) when a file has no VHD footer at
// all: no cookie at its end, nor a copy at its start. It is corrupt too
// (ErrCorrupt, check's footer-invalid): a VHD that lost both footers
// looks the same as a file that never was one, so the message names
// both.
var ErrNoFooter = errors.New("no VHD footer")

type noFooterError struct{ *CorruptError }

func (e noFooterError) Is(target error) bool { return target == ErrNoFooter || target == ErrCorrupt }
func (e noFooterError) Unwrap() error        { return e.CorruptError }

func noFooter() error {
	ce := corrupt("footer", "", -1, "no %q footer cookie in the file's last 512 bytes, nor a footer copy in its first: not a VHD, or one whose footer was lost (a raw disk image converts with 'vhd convert --from raw')", footerCookie).(*CorruptError)
	return noFooterError{ce}
}

// ioError wraps a failure of the underlying file with what was being done.
func ioError(op string, off int64, err error) error {
	return fmt.Errorf("vhd: %s at offset %#x: %w", op, off, err)
}

// ErrOtherFormat is matched (errors.Is) by a *FormatError: the file
// positively holds another format than the one it was to be read as.
var ErrOtherFormat = errors.New("vhd: the file holds another format")

// FormatError says what a file holds instead of a VHD (or, read as a
// raw disk by convert, instead of a disk) and how to convert it.
type FormatError struct {
	Path    string // "" when the caller had no name for the file
	Content Content
	// AsRaw is set when the file was to be read as a raw disk: the
	// message then says how to do that anyway (convert's --from raw).
	AsRaw bool
}

func (e *FormatError) Error() string {
	path, prefix := e.Path, e.Path+": "
	if path == "" {
		path, prefix = "FILE", ""
	}
	if e.AsRaw {
		return fmt.Sprintf("%s%s, not a raw disk or a VHD; %s, or copy its bytes as they are with 'vhd convert --from raw'", prefix, e.Content.What, e.Content.howToConvert(path))
	}
	return fmt.Sprintf("%s%s, not a VHD; %s", prefix, e.Content.What, e.Content.howToConvert(path))
}

// Is makes errors.Is(err, ErrOtherFormat) true.
func (e *FormatError) Is(target error) bool { return target == ErrOtherFormat }
