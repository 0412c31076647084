package backup

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"vhdkit/engine"
)

// The state log of a pull (DEST.part.state), what makes a pull resumable:
//
//	vhdkit-pull 1 size=N point=UUID since=UUID|none base=UUID|none\n
//	OFFSET LENGTH CRC32C LINECRC\n                  one line per piece
//
// all decimal but the CRCs (8 hex digits). CRC32C is the piece's bytes
// as the server sent them (zeros for holes); LINECRC is the IEEE CRC-32
// of the line before it, so a line a crash tore is never taken for a
// piece. A piece is logged only once it is durable in DEST.part (see
// copier.checkpoint), so every logged piece can be skipped on a rerun and
// checked at the end.
//
// A crash leaves the log's last lines torn or missing: reading stops at
// the first line that does not parse, and the file is cut there (and
// synced) before anything is appended, so an append never follows
// garbage.

// maxStateBytes bounds the state file read back: about 8 million pieces.
const maxStateBytes = 512 << 20

// stateHeader says what a pull copies; a rerun resumes only the same.
type stateHeader struct {
	Size  int64
	Point engine.UUID
	Since engine.UUID // zero: a full backup
	Base  engine.UUID // the UUID of --since's image; zero: none
}

func (h stateHeader) line() string {
	return fmt.Sprintf("vhdkit-pull 1 size=%d point=%s since=%s base=%s\n", h.Size, h.Point, uuidOrNone(h.Since), uuidOrNone(h.Base))
}

func uuidOrNone(u engine.UUID) string {
	if u.IsZero() {
		return "none"
	}
	return u.String()
}

func parseHeader(line string) (stateHeader, error) {
	var h stateHeader
	var point, since, base string
	if _, err := fmt.Sscanf(line, "vhdkit-pull 1 size=%d point=%s since=%s base=%s", &h.Size, &point, &since, &base); err != nil {
		return h, fmt.Errorf("not a pull state header: %q", line)
	}
	var err error
	if h.Point, err = ParseUUID(point); err != nil {
		return h, err
	}
	for _, f := range []struct {
		s string
		u *engine.UUID
	}{{since, &h.Since}, {base, &h.Base}} {
		if f.s != "none" {
			if *f.u, err = ParseUUID(f.s); err != nil {
				return h, err
			}
		}
	}
	return h, nil
}

// record is one logged piece.
type record struct {
	piece
	crc uint32
}

func (r record) line() string {
	s := fmt.Sprintf("%d %d %08x", r.off, r.n, r.crc)
	return fmt.Sprintf("%s %08x\n", s, crc32.ChecksumIEEE([]byte(s)))
}

func parseRecord(line string) (record, bool) {
	body, sum, ok := cutLast(line, " ")
	if !ok || fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(body))) != sum {
		return record{}, false
	}
	f := strings.Fields(body)
	if len(f) != 3 {
		return record{}, false
	}
	off, err1 := strconv.ParseInt(f[0], 10, 64)
	n, err2 := strconv.ParseInt(f[1], 10, 64)
	crc, err3 := strconv.ParseUint(f[2], 16, 32)
	if err1 != nil || err2 != nil || err3 != nil || off < 0 || n <= 0 {
		return record{}, false
	}
	return record{piece{off, n}, uint32(crc)}, true
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+len(sep):], true
}

// stateLog is an open state file.
type stateLog struct {
	f    engine.File
	end  int64
	head stateHeader
	// done holds the pieces logged, with their CRCs.
	done map[piece]uint32
}

// createState writes a new log holding only its header, and syncs it.
func createState(f engine.File, h stateHeader) (*stateLog, error) {
	if err := f.Truncate(0); err != nil {
		return nil, err
	}
	line := []byte(h.line())
	if _, err := f.WriteAt(line, 0); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	return &stateLog{f: f, end: int64(len(line)), head: h, done: map[piece]uint32{}}, nil
}

var errNoHeader = errors.New("the state file has no header")

// openState reads a log back: its header and the pieces whose lines are
// whole, cutting (durably) whatever follows the last of them.
func openState(f engine.File) (*stateLog, error) {
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	if size > maxStateBytes {
		return nil, fmt.Errorf("the state file is %d bytes, more than a pull writes (%d)", size, int64(maxStateBytes))
	}
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, 0); err != nil && int64(len(buf)) != size {
		return nil, err
	}
	nl := bytes.IndexByte(buf, '\n')
	if nl < 0 {
		return nil, errNoHeader
	}
	h, err := parseHeader(string(buf[:nl]))
	if err != nil {
		return nil, err
	}
	s := &stateLog{f: f, head: h, done: map[piece]uint32{}, end: int64(nl + 1)}
	for rest := buf[nl+1:]; ; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		r, ok := parseRecord(string(rest[:i]))
		if !ok {
			break
		}
		s.done[r.piece] = r.crc
		s.end += int64(i + 1)
		rest = rest[i+1:]
	}
	if s.end < size {
		if err := f.Truncate(s.end); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// append logs records and syncs. The caller has made their pieces
// durable in the destination first.
func (s *stateLog) append(rs []record) error {
	if len(rs) == 0 {
		return nil
	}
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.line())
	}
	if _, err := s.f.WriteAt([]byte(b.String()), s.end); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return err
	}
	s.end += int64(b.Len())
	for _, r := range rs {
		s.done[r.piece] = r.crc
	}
	return nil
}
