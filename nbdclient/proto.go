package nbdclient

// The NBD wire format a client speaks (NetworkBlockDevice/nbd
// doc/proto.md); nbdserve/proto.go draws the same messages from the
// server's side. All fields are big-endian.
//
// Handshake (fixed newstyle):
//
//	S: "NBDMAGIC" (8)  "IHAVEOPT" (8)  handshake flags (2)
//	C: client flags (4)
//	C: "IHAVEOPT" (8)  option (4)  length (4)  data             repeated
//	S: 0x0003e889045565a9 (8)  option (4)  reply type (4)  length (4)  data
//
// Transmission:
//
//	request      0  magic 0x25609513 (4)   4  command flags (2)
//	             6  type (2)   8  handle (8)   16  offset (8)   24  length (4)
//
//	simple reply 0  magic 0x67446698 (4)   4  error (4)   8  handle (8)
//	             16  data (a READ's, when structured replies are off)
//
//	structured   0  magic 0x668e33ef (4)   4  flags (2)   6  type (2)
//	chunk        8  handle (8)   16  payload length (4)   20  payload
//
// Chunk payloads:
//
//	OFFSET_DATA   offset (8), data
//	OFFSET_HOLE   offset (8), length (4)
//	BLOCK_STATUS  context id (4), then descriptors: length (4), flags (4)
//	ERROR         errno (4), message length (2), message
//	ERROR_OFFSET  as ERROR, then offset (8)
const (
	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454F5054 // "IHAVEOPT"
	oldstyleMagic = 0x00420281861253
	optReplyMagic = 0x0003e889045565a9

	requestMagic    = 0x25609513
	simpleMagic     = 0x67446698
	structuredMagic = 0x668e33ef

	requestSize     = 28
	simpleHdrSize   = 16
	chunkHdrSize    = 20
	optReplyHdrSize = 20
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1
)

// Transmission flags.
const (
	tflagHasFlags     = 1 << 0
	tflagReadOnly     = 1 << 1
	tflagSendDF       = 1 << 7
	tflagCanMultiConn = 1 << 8
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optStartTLS        = 5
	optGo              = 7
	optStructuredReply = 8
	optSetMetaContext  = 10
)

// Option reply types.
const (
	repAck         = 1
	repInfo        = 3
	repMetaContext = 4

	repErrBit     = 1 << 31
	repErrUnsup   = repErrBit + 1
	repErrPolicy  = repErrBit + 2
	repErrTLSReqd = repErrBit + 5
	repErrUnknown = repErrBit + 6
)

// NBD_INFO types.
const (
	infoExport      = 0
	infoDescription = 2
	infoBlockSize   = 3
)

// Commands.
const (
	cmdRead        = 0
	cmdDisc        = 2
	cmdBlockStatus = 7
)

// Structured reply chunk types and flags.
const (
	replyFlagDone = 1 << 0

	replyNone        = 0
	replyOffsetData  = 1
	replyOffsetHole  = 2
	replyBlockStatus = 5
	replyErrBit      = 1 << 15
	replyError       = replyErrBit + 1
	replyErrorOffset = replyErrBit + 2
)

// base:allocation flags.
const (
	StateHole = 1 << 0
	StateZero = 1 << 1
)

// Limits on what a server may make the client hold, whatever it claims.
const (
	// maxOptReply bounds an option reply's data.
	maxOptReply = 64 << 10
	// maxErrorPayload bounds an error chunk: errno, a message of at most
	// 4 KiB (the spec's string limit) and an offset.
	maxErrorPayload = 4 + 2 + 4096 + 8
	// MaxStatusPayload bounds a BLOCK_STATUS chunk: 512 Ki descriptors.
	// BlockStatus asks for at most MaxStatusLength bytes so that an
	// honest server's answer fits even at 512-byte granularity.
	MaxStatusPayload = 4 + 8*(512<<10)
	// MaxStatusLength is the most one BlockStatus call asks about.
	MaxStatusLength = 256 << 20
	// maxReadLength is the largest READ the client sends (the spec's
	// default maximum block size, unless the server says less).
	maxReadLength = 32 << 20
	// maxReadPieces bounds the separate pieces a READ's chunks may leave
	// before they join up (a server sending tiny chunks out of order).
	maxReadPieces = 4096
)
