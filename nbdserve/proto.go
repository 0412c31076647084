package nbdserve

// The NBD wire format, from NetworkBlockDevice/nbd doc/proto.md. All
// fields are big-endian. The constants are defined here rather than taken
// from github.com/pojntfx/go-nbd: its protocol package lacks the
// WRITE_ZEROES, FAST_ZERO, CACHE, DF and meta-context values this server
// needs, and one file that draws every message next to its constants is
// easier to check against the spec than two half-sets.
//
// Handshake (fixed newstyle):
//
//	S: "NBDMAGIC" (8)  "IHAVEOPT" (8)  handshake flags (2)
//	C: client flags (4)
//	C: "IHAVEOPT" (8)  option (4)  length (4)  data (length)      repeated
//	S: 0x0003e889045565a9 (8)  option (4)  reply type (4)  length (4)  data
//
// Transmission:
//
//	request      0  magic 0x25609513 (4)
//	             4  command flags (2)
//	             6  type (2)
//	             8  handle (8)
//	            16  offset (8)
//	            24  length (4)
//	            28  data (WRITE only)
//
//	simple reply 0  magic 0x67446698 (4)
//	             4  error (4)
//	             8  handle (8)
//	            16  data (READ only, without error)
//
//	structured   0  magic 0x668e33ef (4)
//	chunk        4  flags (2)
//	             6  type (2)
//	             8  handle (8)
//	            16  payload length (4)
//	            20  payload
const (
	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic = 0x0003e889045565a9

	requestMagic    = 0x25609513
	simpleMagic     = 0x67446698
	structuredMagic = 0x668e33ef

	requestSize     = 28
	simpleHdrSize   = 16
	chunkHdrSize    = 20
	optHdrSize      = 16
	optReplyHdrSize = 20
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	clientFixedNewstyle = 1 << 0
	clientNoZeroes      = 1 << 1
)

// Transmission flags.
const (
	tflagHasFlags        = 1 << 0
	tflagReadOnly        = 1 << 1
	tflagSendFlush       = 1 << 2
	tflagSendFUA         = 1 << 3
	tflagRotational      = 1 << 4
	tflagSendTrim        = 1 << 5
	tflagSendWriteZeroes = 1 << 6
	tflagSendDF          = 1 << 7
	tflagCanMultiConn    = 1 << 8
	tflagSendCache       = 1 << 10
	tflagSendFastZero    = 1 << 11
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
)

// Option reply types.
const (
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4

	repErrUnsup    = 1<<31 + 1
	repErrPolicy   = 1<<31 + 2
	repErrInvalid  = 1<<31 + 3
	repErrTLSReqd  = 1<<31 + 5
	repErrUnknown  = 1<<31 + 6
	repErrShutdown = 1<<31 + 7
	repErrTooBig   = 1<<31 + 9
)

// NBD_INFO types in NBD_REP_INFO replies.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// Command flags.
const (
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4
)

// Structured reply chunk types and flags.
const (
	replyFlagDone = 1 << 0

	replyNone        = 0
	replyOffsetData  = 1
	replyOffsetHole  = 2
	replyBlockStatus = 5
	replyError       = 1<<15 + 1
)

// Error values sent in replies (NBD_EPERM, ...).
const (
	errPerm     = 1
	errIO       = 5
	errNoMem    = 12
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108
)

// base:allocation status flags.
const (
	stateHole = 1 << 0
	stateZero = 1 << 1
)

// metaBaseAllocation is the one metadata context served; its ID is fixed.
const (
	metaBaseAllocation   = "base:allocation"
	metaBaseAllocationID = 1
)
