package nbdclient

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Info is what negotiation learnt about the export.
type Info struct {
	// Size of the export in bytes.
	Size int64
	// Flags are the transmission flags.
	Flags uint16
	// Description is the server's NBD_INFO_DESCRIPTION, if it sent one.
	Description string
	// MaxBlock is the largest READ the server takes (32 MiB if it did not
	// say).
	MaxBlock uint32
	// Structured: structured replies are on (reads send holes; block
	// status works).
	Structured bool
	// Contexts maps the metadata contexts selected to their ids.
	Contexts map[string]uint32
}

// ReadOnly reports whether the export is read-only.
func (i *Info) ReadOnly() bool { return i.Flags&tflagReadOnly != 0 }

// CanMultiConn reports whether the server says several connections to
// the export see one disk (NBD_FLAG_CAN_MULTI_CONN).
func (i *Info) CanMultiConn() bool { return i.Flags&tflagCanMultiConn != 0 }

// negotiator runs the fixed newstyle handshake on a stream.
type negotiator struct {
	rw io.ReadWriter
	// upgrade, when set, runs the TLS handshake after the server accepts
	// STARTTLS and returns the stream to go on over.
	upgrade func() (io.ReadWriter, error)
	// tlsReplies counts the option replies read over TLS: none means a
	// server that hung up at once did so over the TLS session itself.
	tlsReplies int
	tlsOn      bool
	export     string
	contexts   []string
	noZeroes   bool
	info       Info
}

// negotiate greets the server, turns on structured replies, selects the
// metadata contexts it has of those asked for, and opens the export with
// GO (EXPORT_NAME if the server has no GO).
func (n *negotiator) negotiate() (*Info, error) {
	if err := n.greet(); err != nil {
		return nil, err
	}
	if n.upgrade != nil {
		if err := n.startTLS(); err != nil {
			return nil, err
		}
	}
	n.info.MaxBlock = maxReadLength
	n.info.Contexts = map[string]uint32{}
	if err := n.structuredReplies(); err != nil {
		return nil, err
	}
	if n.info.Structured && len(n.contexts) > 0 {
		if err := n.setMetaContexts(); err != nil {
			return nil, err
		}
	}
	if err := n.goExport(); err != nil {
		return nil, err
	}
	if n.info.Size < 0 {
		return nil, protoErr("export size %d", n.info.Size)
	}
	return &n.info, nil
}

func (n *negotiator) greet() error {
	var hello [18]byte
	if _, err := io.ReadFull(n.rw, hello[:16]); err != nil {
		return fmt.Errorf("nbd: reading the server's greeting: %w", err)
	}
	if m := binary.BigEndian.Uint64(hello[0:]); m != nbdMagic {
		return protoErr("greeting magic %#x: not an NBD server", m)
	}
	switch m := binary.BigEndian.Uint64(hello[8:]); m {
	case optMagic:
	case oldstyleMagic:
		return protoErr("an oldstyle NBD server: only fixed newstyle is supported")
	default:
		return protoErr("greeting magic %#x", m)
	}
	if _, err := io.ReadFull(n.rw, hello[16:]); err != nil {
		return fmt.Errorf("nbd: reading the server's greeting: %w", err)
	}
	flags := binary.BigEndian.Uint16(hello[16:])
	if flags&flagFixedNewstyle == 0 {
		return protoErr("the server does not speak fixed newstyle")
	}
	n.noZeroes = flags&flagNoZeroes != 0
	cf := uint32(flagFixedNewstyle)
	if n.noZeroes {
		cf |= flagNoZeroes
	}
	return n.write(binary.BigEndian.AppendUint32(nil, cf))
}

func (n *negotiator) write(b []byte) error {
	if _, err := n.rw.Write(b); err != nil {
		return fmt.Errorf("nbd: sending to the server: %w", err)
	}
	return nil
}

// sendOption sends an option with its data.
func (n *negotiator) sendOption(opt uint32, data []byte) error {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16+len(data)), optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return n.write(append(b, data...))
}

// optReply reads one option reply to opt: its type and data.
func (n *negotiator) optReply(opt uint32) (uint32, []byte, error) {
	var h [optReplyHdrSize]byte
	if _, err := io.ReadFull(n.rw, h[:]); err != nil {
		return 0, nil, fmt.Errorf("nbd: reading an option reply: %w", err)
	}
	typ, length, err := parseOptReplyHeader(&h, opt)
	if err != nil {
		return 0, nil, err
	}
	if n.tlsOn {
		n.tlsReplies++
	}
	data := make([]byte, length)
	if _, err := io.ReadFull(n.rw, data); err != nil {
		return 0, nil, fmt.Errorf("nbd: reading an option reply: %w", err)
	}
	return typ, data, nil
}

// parseOptReplyHeader checks an option reply header: its magic, that it
// answers opt, and its length.
func parseOptReplyHeader(h *[optReplyHdrSize]byte, opt uint32) (typ, length uint32, err error) {
	if m := binary.BigEndian.Uint64(h[0:]); m != optReplyMagic {
		return 0, 0, protoErr("option reply magic %#x", m)
	}
	if o := binary.BigEndian.Uint32(h[8:]); o != opt {
		return 0, 0, protoErr("reply to option %d while waiting for %d", o, opt)
	}
	typ, length = binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
	if length > maxOptReply {
		return 0, 0, protoErr("option reply of %d bytes", length)
	}
	return typ, length, nil
}

// optionError describes an error reply to an option.
func optionError(what string, typ uint32, data []byte) error {
	msg := printable(data)
	switch typ {
	case repErrUnknown:
		return fmt.Errorf("nbd: the server has no such export (%s): %s", what, msg)
	case repErrTLSReqd:
		return fmt.Errorf("nbd: the server requires TLS (it refused %s until TLS is on): use an nbds:// URI, trusting the CA that signed its certificate (--tls-ca FILE)", what)
	case repErrPolicy:
		return fmt.Errorf("nbd: the server refused %s by policy: %s", what, msg)
	}
	return fmt.Errorf("nbd: the server refused %s (reply %#x): %s", what, typ, msg)
}

// startTLS asks for TLS before any other option, as the spec wants, and
// goes on over the stream n.upgrade returns. A server that does not
// offer TLS ends the negotiation: an nbds URI never falls back to
// plaintext.
func (n *negotiator) startTLS() error {
	if err := n.sendOption(optStartTLS, nil); err != nil {
		return err
	}
	typ, p, err := n.optReply(optStartTLS)
	switch {
	case err != nil:
		return err
	case typ == repErrUnsup || typ == repErrPolicy:
		return fmt.Errorf("nbd: the server does not offer TLS (it answered STARTTLS with %s: %s); an nbds URI never goes on in plaintext: start the server with TLS, or write nbd:// if plaintext is what you mean", replyName(typ), printable(p))
	case typ&repErrBit != 0:
		return optionError("STARTTLS", typ, p)
	case typ != repAck:
		return protoErr("STARTTLS answered with reply type %d", typ)
	}
	rw, err := n.upgrade()
	if err != nil {
		return err
	}
	n.rw, n.tlsOn = rw, true
	return nil
}

// replyName names the option error replies STARTTLS may get.
func replyName(typ uint32) string {
	if typ == repErrPolicy {
		return "NBD_REP_ERR_POLICY"
	}
	return "NBD_REP_ERR_UNSUP"
}

func (n *negotiator) structuredReplies() error {
	if err := n.sendOption(optStructuredReply, nil); err != nil {
		return err
	}
	typ, p, err := n.optReply(optStructuredReply)
	if err != nil {
		return err
	}
	if typ == repErrTLSReqd {
		return optionError("structured replies", typ, p)
	}
	n.info.Structured = typ == repAck
	if typ != repAck && typ&repErrBit == 0 {
		return protoErr("STRUCTURED_REPLY answered with reply type %d", typ)
	}
	return nil
}

// setMetaContexts asks for the contexts; the server replies with those
// it has, then an ACK (or an error: none selected).
//
//	export name length (4), name, query count (4), per query: length (4), query
func (n *negotiator) setMetaContexts() error {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(n.export)))
	data = append(data, n.export...)
	data = binary.BigEndian.AppendUint32(data, uint32(len(n.contexts)))
	for _, q := range n.contexts {
		data = binary.BigEndian.AppendUint32(data, uint32(len(q)))
		data = append(data, q...)
	}
	if err := n.sendOption(optSetMetaContext, data); err != nil {
		return err
	}
	for range maxOptReply {
		typ, p, err := n.optReply(optSetMetaContext)
		switch {
		case err != nil:
			return err
		case typ == repAck:
			return nil
		case typ&repErrBit != 0:
			clear(n.info.Contexts)
			return nil
		case typ != repMetaContext || len(p) < 5:
			return protoErr("SET_META_CONTEXT answered with reply type %d of %d bytes", typ, len(p))
		}
		if len(n.info.Contexts) >= len(n.contexts) {
			return protoErr("SET_META_CONTEXT answered with more contexts than asked for")
		}
		n.info.Contexts[string(p[4:])] = binary.BigEndian.Uint32(p)
	}
	return protoErr("SET_META_CONTEXT answered without end")
}

// goExport opens the export with GO, asking for its description and
// block sizes, or with EXPORT_NAME when the server has no GO.
//
//	name length (4), name, info request count (2), requests (2 each)
func (n *negotiator) goExport() error {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(n.export)))
	data = append(data, n.export...)
	data = binary.BigEndian.AppendUint16(data, 2)
	data = binary.BigEndian.AppendUint16(data, infoDescription)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	if err := n.sendOption(optGo, data); err != nil {
		return err
	}
	gotExport := false
	for range maxOptReply {
		typ, p, err := n.optReply(optGo)
		switch {
		case err != nil:
			return err
		case typ == repAck:
			if !gotExport {
				return protoErr("GO acknowledged without NBD_INFO_EXPORT")
			}
			return nil
		case typ == repErrUnsup:
			return n.exportName()
		case typ&repErrBit != 0:
			return optionError(fmt.Sprintf("export %q", n.export), typ, p)
		case typ != repInfo:
			return protoErr("GO answered with reply type %d", typ)
		}
		isExport, err := n.info.parseInfo(p)
		if err != nil {
			return err
		}
		gotExport = gotExport || isExport
	}
	return protoErr("GO answered without end")
}

// parseInfo reads one NBD_REP_INFO payload into i; unknown types are
// ignored, as the spec asks.
func (i *Info) parseInfo(p []byte) (isExport bool, err error) {
	if len(p) < 2 {
		return false, protoErr("INFO reply of %d bytes", len(p))
	}
	switch binary.BigEndian.Uint16(p) {
	case infoExport:
		if len(p) != 12 {
			return false, protoErr("NBD_INFO_EXPORT of %d bytes", len(p))
		}
		size := binary.BigEndian.Uint64(p[2:])
		if size > 1<<62 {
			return false, protoErr("export size %d", size)
		}
		i.Size, i.Flags = int64(size), binary.BigEndian.Uint16(p[10:])
		return true, nil
	case infoDescription:
		i.Description = printable(p[2:min(len(p), 2+4096)])
	case infoBlockSize:
		if len(p) != 14 {
			return false, protoErr("NBD_INFO_BLOCK_SIZE of %d bytes", len(p))
		}
		if max := binary.BigEndian.Uint32(p[10:]); max >= 512 && max < i.MaxBlock {
			i.MaxBlock = max
		}
	}
	return false, nil
}

// exportName is the old way in: it cannot fail politely (an unknown
// export closes the connection) and carries no info but size and flags.
func (n *negotiator) exportName() error {
	if err := n.sendOption(optExportName, []byte(n.export)); err != nil {
		return err
	}
	b := make([]byte, 134)
	if n.noZeroes {
		b = b[:10]
	}
	if _, err := io.ReadFull(n.rw, b); err != nil {
		return fmt.Errorf("nbd: the server closed the connection on EXPORT_NAME %q (no such export?): %w", n.export, err)
	}
	size := binary.BigEndian.Uint64(b)
	if size > 1<<62 {
		return protoErr("export size %d", size)
	}
	n.info.Size, n.info.Flags = int64(size), binary.BigEndian.Uint16(b[8:])
	n.info.Contexts = map[string]uint32{}
	return nil
}
