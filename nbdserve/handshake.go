package nbdserve

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// errHardDisconnect ends a negotiation the spec says must end without a
// reply (bad magic, unknown client flags, an unusable EXPORT_NAME).
var errHardDisconnect = errors.New("nbd: protocol violation")

// handshake runs fixed newstyle negotiation. It returns true when the
// client chose an export and transmission begins, false when the client
// aborted.
func (c *conn) handshake() (bool, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], nbdMagic)
	binary.BigEndian.PutUint64(hello[8:], optMagic)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(hello[:]); err != nil {
		return false, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return false, err
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(clientFixedNewstyle|clientNoZeroes) != 0 {
		return false, fmt.Errorf("%w: unknown client flags %#x", errHardDisconnect, flags)
	}
	c.noZeroes = flags&clientNoZeroes != 0

	for i := 0; i < maxOptions; i++ {
		var h [optHdrSize]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return false, err
		}
		if m := binary.BigEndian.Uint64(h[0:]); m != optMagic {
			return false, fmt.Errorf("%w: option magic %#x", errHardDisconnect, m)
		}
		opt := binary.BigEndian.Uint32(h[8:])
		n := binary.BigEndian.Uint32(h[12:])
		if n > maxOptionLen {
			return false, fmt.Errorf("%w: option %d has %d bytes of data, more than %d", errHardDisconnect, opt, n, maxOptionLen)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return false, err
		}
		if c.stopping.Load() {
			if opt == optAbort {
				return false, c.optReply(opt, repAck, nil)
			}
			if opt == optExportName {
				return false, errServerShutdown
			}
			if err := c.optError(opt, repErrShutdown, "server is shutting down"); err != nil {
				return false, err
			}
			continue
		}
		done, err := c.option(opt, data)
		if err != nil || done {
			return done && err == nil && c.export != nil, err
		}
	}
	return false, fmt.Errorf("%w: more than %d options", errHardDisconnect, maxOptions)
}

// option handles one option. done ends negotiation: with c.export set,
// transmission follows; without, the client aborted.
func (c *conn) option(opt uint32, data []byte) (done bool, err error) {
	if c.srv.TLSConfig != nil && !c.tlsOn {
		switch opt {
		case optStartTLS, optAbort:
		case optExportName:
			return true, fmt.Errorf("%w: EXPORT_NAME before STARTTLS on a TLS-only server", errHardDisconnect)
		default:
			return false, c.optError(opt, repErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
		}
	}
	switch opt {
	case optAbort:
		// The client may hang up without reading the reply.
		c.optReply(opt, repAck, nil)
		return true, nil
	case optExportName:
		return true, c.exportName(string(data))
	case optList:
		return false, c.list(data)
	case optStartTLS:
		return false, c.startTLS(data)
	case optInfo, optGo:
		return c.infoGo(opt, data)
	case optStructuredReply:
		if len(data) != 0 {
			return false, c.optError(opt, repErrInvalid, "STRUCTURED_REPLY takes no data")
		}
		c.structured = true
		return false, c.optReply(opt, repAck, nil)
	case optListMetaContext, optSetMetaContext:
		return false, c.metaContext(opt, data)
	}
	return false, c.optError(opt, repErrUnsup, fmt.Sprintf("option %d is not supported", opt))
}

func (c *conn) optReply(opt, typ uint32, data []byte) error {
	var h [optReplyHdrSize]byte
	binary.BigEndian.PutUint64(h[0:], optReplyMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	return c.writeAll(h[:], data)
}

func (c *conn) optError(opt, typ uint32, msg string) error {
	return c.optReply(opt, typ, []byte(msg))
}

// exportName is the old way into transmission: no error can be returned,
// so an unknown export ends the connection.
func (c *conn) exportName(name string) error {
	e, ok := c.srv.attach(c, name)
	if !ok || len(name) > maxStringLen {
		return fmt.Errorf("%w: EXPORT_NAME %q: no such export", errHardDisconnect, name)
	}
	c.choose(e)
	b := make([]byte, 10, 134)
	binary.BigEndian.PutUint64(b[0:], uint64(e.Disk.Size()))
	binary.BigEndian.PutUint16(b[8:], c.tflags)
	if !c.noZeroes {
		b = b[:134]
	}
	return c.writeAll(b)
}

// choose makes e the export for transmission.
func (c *conn) choose(e *Export) {
	c.export = e
	c.tflags = c.transmissionFlags(e)
	// BLOCK_STATUS needs the meta context set for this very export.
	if c.metaExport != e.Name {
		c.metaAlloc, c.metaChanged = false, false
	}
}

// transmissionFlags are advertised truthfully: every connection shares
// the export's one Disk, and its Flush covers writes made through all of
// them, so CAN_MULTI_CONN holds.
func (c *conn) transmissionFlags(e *Export) uint16 {
	f := uint16(tflagHasFlags | tflagSendFlush | tflagSendCache | tflagCanMultiConn)
	if e.Disk.ReadOnly() {
		f |= tflagReadOnly
	} else {
		f |= tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagSendFastZero
	}
	if c.structured {
		f |= tflagSendDF
	}
	return f
}

func (c *conn) list(data []byte) error {
	if len(data) != 0 {
		return c.optError(optList, repErrInvalid, "LIST takes no data")
	}
	for _, name := range c.srv.names() {
		b := make([]byte, 4+len(name))
		binary.BigEndian.PutUint32(b, uint32(len(name)))
		copy(b[4:], name)
		if err := c.optReply(optList, repServer, b); err != nil {
			return err
		}
	}
	return c.optReply(optList, repAck, nil)
}

func (c *conn) startTLS(data []byte) error {
	switch {
	case c.srv.TLSConfig == nil:
		return c.optError(optStartTLS, repErrUnsup, "TLS is not configured on this server")
	case c.tlsOn:
		return c.optError(optStartTLS, repErrInvalid, "TLS is already on")
	case len(data) != 0:
		return c.optError(optStartTLS, repErrInvalid, "STARTTLS takes no data")
	case c.br.Buffered() != 0:
		return fmt.Errorf("%w: data sent before the STARTTLS reply", errHardDisconnect)
	}
	if err := c.optReply(optStartTLS, repAck, nil); err != nil {
		return err
	}
	tc := tls.Server(c.raw, c.srv.TLSConfig)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("nbd: TLS handshake: %w", err)
	}
	c.nc, c.br, c.tlsOn = tc, bufio.NewReaderSize(tc, 64<<10), true
	// Nothing negotiated before TLS survives it.
	c.structured, c.metaExport, c.metaAlloc, c.metaChanged = false, "", false, false
	return nil
}

// infoGo answers NBD_OPT_INFO and NBD_OPT_GO:
//
//	0  name length (4)   4  name   +0  number of info requests (2)  +2  requests (2 each)
func (c *conn) infoGo(opt uint32, data []byte) (bool, error) {
	if len(data) < 6 {
		return false, c.optError(opt, repErrInvalid, "option data too short")
	}
	nl := binary.BigEndian.Uint32(data)
	if uint64(nl) > uint64(len(data)-6) || nl > maxStringLen {
		return false, c.optError(opt, repErrInvalid, "bad export name length")
	}
	name := string(data[4 : 4+nl])
	rest := data[4+nl:]
	nreq := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*nreq {
		return false, c.optError(opt, repErrInvalid, "information request count does not match the option length")
	}
	// GO counts the connection as the export's user before anything is
	// sent, so a RemoveExport from now on finds it (exports.go).
	find := c.srv.lookup
	if opt == optGo {
		find = func(name string) (*Export, bool) { return c.srv.attach(c, name) }
	}
	e, ok := find(name)
	if !ok {
		return false, c.optError(opt, repErrUnknown, fmt.Sprintf("no export named %q", name))
	}
	wantName, wantDesc := false, false
	for i := 0; i < nreq; i++ {
		switch binary.BigEndian.Uint16(rest[2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		}
	}
	flags := c.transmissionFlags(e)
	var ex [12]byte
	binary.BigEndian.PutUint16(ex[0:], infoExport)
	binary.BigEndian.PutUint64(ex[2:], uint64(e.Disk.Size()))
	binary.BigEndian.PutUint16(ex[10:], flags)
	if err := c.optReply(opt, repInfo, ex[:]); err != nil {
		return false, err
	}
	if wantName {
		if err := c.optReply(opt, repInfo, infoString(infoName, e.Name)); err != nil {
			return false, err
		}
	}
	if wantDesc && e.Description != "" {
		if err := c.optReply(opt, repInfo, infoString(infoDescription, e.Description)); err != nil {
			return false, err
		}
	}
	// Block sizes are sent whether asked for or not: any alignment works
	// (minimum 1), 4 KiB is efficient, and requests carry at most
	// MaxPayload bytes of data.
	var bs [14]byte
	binary.BigEndian.PutUint16(bs[0:], infoBlockSize)
	binary.BigEndian.PutUint32(bs[2:], 1)
	binary.BigEndian.PutUint32(bs[6:], 4096)
	binary.BigEndian.PutUint32(bs[10:], uint32(c.srv.maxPayload()))
	if err := c.optReply(opt, repInfo, bs[:]); err != nil {
		return false, err
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		return false, err
	}
	if opt == optInfo {
		return false, nil
	}
	c.choose(e)
	return true, nil
}

func infoString(typ uint16, s string) []byte {
	if len(s) > maxStringLen {
		s = s[:maxStringLen]
	}
	b := make([]byte, 2+len(s))
	binary.BigEndian.PutUint16(b, typ)
	copy(b[2:], s)
	return b
}

// metaContext answers LIST_META_CONTEXT and SET_META_CONTEXT. The
// contexts served are base:allocation and, on an export whose disk lists
// changes (ChangeLister), vhdkit:changed.
//
//	0  export name length (4)  4  name  +0  query count (4)  then per query: length (4), query
func (c *conn) metaContext(opt uint32, data []byte) error {
	if opt == optSetMetaContext {
		// SET replaces the selection even when it fails.
		c.metaExport, c.metaAlloc, c.metaChanged = "", false, false
	}
	if !c.structured {
		return c.optError(opt, repErrInvalid, "negotiate structured replies first")
	}
	name, rest, ok := takeString(data)
	if !ok || len(rest) < 4 {
		return c.optError(opt, repErrInvalid, "malformed meta context option")
	}
	nq := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if uint64(nq) > uint64(len(rest))/4 {
		return c.optError(opt, repErrInvalid, "query count does not fit in the option")
	}
	queries := make([]string, 0, nq)
	for i := uint32(0); i < nq; i++ {
		var q string
		if q, rest, ok = takeString(rest); !ok {
			return c.optError(opt, repErrInvalid, "malformed query")
		}
		queries = append(queries, q)
	}
	if len(rest) != 0 {
		return c.optError(opt, repErrInvalid, "trailing bytes after the queries")
	}
	e, found := c.srv.lookup(name)
	if !found {
		return c.optError(opt, repErrUnknown, fmt.Sprintf("no export named %q", name))
	}
	alloc, changed := contextsFor(e, opt, queries)
	for _, m := range []struct {
		on   bool
		id   uint32
		name string
	}{{alloc, metaBaseAllocationID, metaBaseAllocation}, {changed, metaChangedID, metaChangedName}} {
		if !m.on {
			continue
		}
		b := make([]byte, 4+len(m.name))
		if opt == optSetMetaContext {
			binary.BigEndian.PutUint32(b, m.id)
		}
		copy(b[4:], m.name)
		if err := c.optReply(opt, repMetaContext, b); err != nil {
			return err
		}
	}
	if opt == optSetMetaContext {
		c.metaExport, c.metaAlloc, c.metaChanged = e.Name, alloc, changed
	}
	return c.optReply(opt, repAck, nil)
}

// contextsFor says which contexts queries select on export e:
// base:allocation always exists, vhdkit:changed only where the disk can
// list changes. SET takes exact names; LIST also a namespace ("base:",
// "vhdkit:") and no query at all (every context the export has).
func contextsFor(e *Export, opt uint32, queries []string) (alloc, changed bool) {
	list := opt == optListMetaContext
	changed = list && len(queries) == 0
	alloc = changed
	for _, q := range queries {
		alloc = alloc || q == metaBaseAllocation || (list && q == "base:")
		changed = changed || q == metaChangedName || (list && q == "vhdkit:")
	}
	return alloc, changed && offersChanged(e)
}

// takeString reads a 32-bit length and that many bytes, at most
// maxStringLen.
func takeString(b []byte) (string, []byte, bool) {
	if len(b) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if n > maxStringLen || uint64(n) > uint64(len(b)-4) {
		return "", nil, false
	}
	return string(b[4 : 4+n]), b[4+n:], true
}
