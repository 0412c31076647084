package nbdclient

import (
	"encoding/binary"
	"slices"
)

// Parsers of transmission replies: pure functions over bytes, so they are
// table-tested and fuzzed without a server. Each checks every length
// against the request it answers before anything is read or allocated.

// chunkHeader is a structured reply chunk's header (after its magic).
type chunkHeader struct {
	flags  uint16
	typ    uint16
	handle uint64
	length uint32
}

func parseChunkHeader(b *[chunkHdrSize - 4]byte) chunkHeader {
	return chunkHeader{
		flags:  binary.BigEndian.Uint16(b[0:]),
		typ:    binary.BigEndian.Uint16(b[2:]),
		handle: binary.BigEndian.Uint64(b[4:]),
		length: binary.BigEndian.Uint32(b[12:]),
	}
}

// checkChunk checks a chunk's type and length against the request it
// answers: what may be read for it, and into what.
func checkChunk(h chunkHeader, cmd uint16, reqLen uint32) error {
	done := h.flags&replyFlagDone != 0
	switch {
	case h.flags&^replyFlagDone != 0:
		return protoErr("chunk flags %#x", h.flags)
	case h.typ == replyNone:
		if h.length != 0 || !done {
			return protoErr("NONE chunk of %d bytes, done %v", h.length, done)
		}
	case h.typ == replyOffsetData:
		if cmd != cmdRead || h.length <= 8 || uint64(h.length)-8 > uint64(reqLen) {
			return protoErr("OFFSET_DATA chunk of %d bytes for a %d-byte %s", h.length, reqLen, cmdName(cmd))
		}
	case h.typ == replyOffsetHole:
		if cmd != cmdRead || h.length != 12 {
			return protoErr("OFFSET_HOLE chunk of %d bytes for a %s", h.length, cmdName(cmd))
		}
	case h.typ == replyBlockStatus:
		if cmd != cmdBlockStatus || h.length < 12 || h.length > MaxStatusPayload || (h.length-4)%8 != 0 {
			return protoErr("BLOCK_STATUS chunk of %d bytes for a %s", h.length, cmdName(cmd))
		}
	case h.typ&replyErrBit != 0:
		if h.length < 6 || h.length > maxErrorPayload {
			return protoErr("error chunk of %d bytes", h.length)
		}
	default:
		return protoErr("unknown chunk type %d", h.typ)
	}
	return nil
}

// parseError reads an error chunk's payload.
func parseError(typ uint16, p []byte) (*ServerError, error) {
	if len(p) < 6 {
		return nil, protoErr("error chunk of %d bytes", len(p))
	}
	errno := binary.BigEndian.Uint32(p)
	n := int(binary.BigEndian.Uint16(p[4:]))
	want := 6 + n
	if typ == replyErrorOffset {
		want += 8
	}
	if errno == 0 || len(p) < 6+n || (typ == replyError || typ == replyErrorOffset) && len(p) != want {
		return nil, protoErr("error chunk: errno %d, message of %d bytes in %d", errno, n, len(p))
	}
	return &ServerError{Errno: errno, Message: printable(p[6 : 6+n])}, nil
}

// printable keeps a server's message to one line of printable text.
func printable(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		out = append(out, r)
	}
	return string(out)
}

// Extent is one BLOCK_STATUS descriptor: a length and the context's
// flags for it.
type Extent struct {
	Len   int64
	Flags uint32
}

// parseStatus reads a BLOCK_STATUS payload: its context id and
// descriptors, each of a non-zero length.
func parseStatus(p []byte) (uint32, []Extent, error) {
	if len(p) < 12 || (len(p)-4)%8 != 0 {
		return 0, nil, protoErr("BLOCK_STATUS payload of %d bytes", len(p))
	}
	id := binary.BigEndian.Uint32(p)
	ext := make([]Extent, 0, (len(p)-4)/8)
	for i := 4; i < len(p); i += 8 {
		n := binary.BigEndian.Uint32(p[i:])
		if n == 0 {
			return 0, nil, protoErr("BLOCK_STATUS descriptor of length 0")
		}
		ext = append(ext, Extent{Len: int64(n), Flags: binary.BigEndian.Uint32(p[i+4:])})
	}
	return id, ext, nil
}

// span is a part of a READ's range that chunks have covered, relative to
// the request's offset.
type span struct{ lo, hi int64 }

// coverage records the parts of a READ chunks delivered: overlapping
// chunks are a protocol error, and a READ succeeds only once they cover
// it all.
type coverage []span

// add records [lo, hi), joining it to its neighbours.
func (c *coverage) add(lo, hi int64) error {
	s := *c
	i, _ := slices.BinarySearchFunc(s, lo, func(x span, v int64) int {
		switch {
		case x.lo < v:
			return -1
		case x.lo > v:
			return 1
		}
		return 0
	})
	if (i > 0 && s[i-1].hi > lo) || (i < len(s) && s[i].lo < hi) {
		return protoErr("READ chunks overlap at %d", lo)
	}
	switch {
	case i > 0 && s[i-1].hi == lo && i < len(s) && s[i].lo == hi:
		s[i-1].hi = s[i].hi
		s = slices.Delete(s, i, i+1)
	case i > 0 && s[i-1].hi == lo:
		s[i-1].hi = hi
	case i < len(s) && s[i].lo == hi:
		s[i].lo = lo
	default:
		if len(s) >= maxReadPieces {
			return protoErr("READ answered in more than %d separate pieces", maxReadPieces)
		}
		s = slices.Insert(s, i, span{lo, hi})
	}
	*c = s
	return nil
}

// complete reports whether [0, n) is covered.
func (c coverage) complete(n int64) bool {
	return n == 0 || (len(c) == 1 && c[0].lo == 0 && c[0].hi == n)
}

// readPiece checks an OFFSET_DATA or OFFSET_HOLE chunk's offset and
// length against the READ [off, off+n) and returns its place in the
// read's buffer.
func readPiece(chunkOff uint64, length uint64, off int64, n uint32) (lo, hi int64, err error) {
	if chunkOff < uint64(off) || length == 0 || chunkOff-uint64(off) > uint64(n) || length > uint64(n)-(chunkOff-uint64(off)) {
		return 0, 0, protoErr("READ chunk at %d+%d outside the request %d+%d", chunkOff, length, off, n)
	}
	lo = int64(chunkOff - uint64(off))
	return lo, lo + int64(length), nil
}

func cmdName(cmd uint16) string {
	switch cmd {
	case cmdRead:
		return "READ"
	case cmdBlockStatus:
		return "BLOCK_STATUS"
	}
	return "request"
}
