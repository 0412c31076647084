// Package guestagent speaks the protocol of qemu-guest-agent (qemu-ga),
// the program a guest runs to let its host freeze its filesystems for a
// consistent backup. The runner gives every guest a virtio-serial port
// named org.qemu.guest_agent.0 whose host end is a unix socket the
// runner listens on; Client talks over that connection.
//
// # The protocol
//
// JSON, one object a line each way, no greeting and no events:
//
//	host:  {"execute": "guest-ping", "id": 7}
//	agent: {"return": {}, "id": 7}
//	agent: {"error": {"class": "CommandNotFound", "desc": "..."}, "id": 7}
//
// The stream outlives both ends: bytes the host writes while no agent
// reads wait in QEMU's port and in the socket, and are read by whatever
// agent opens the port later; a reply the host stopped waiting for
// (a timeout) still comes, later. So the stream is resynchronised before
// the first command and after any failure: the host sends a 0xFF byte
// (the agent's parser drops what it had half read, and answers that
// byte with a parse error) and guest-sync-delimited with a fresh id; the
// agent answers 0xFF followed by {"return": ID}, and everything before
// that reply is stale and skipped. Replies after it come in the order of
// the commands; this client sends one command at a time and checks the
// id the agent echoes, so a stale reply is never taken for a new one.
//
// # Deadlines and limits
//
// Every call ends by its context's deadline, or DefaultTimeout, with an
// error that is context.DeadlineExceeded: a guest with no agent running
// never answers, and that is the common case, not an error of the
// connection. A timed-out call leaves the stream
// unsynchronised, and the next call resynchronises. A line longer than
// MaxLineBytes is refused (the agent's replies to these commands are a
// few bytes); nothing the agent sends sizes an allocation.
//
// # Freezing
//
// FreezeFS (guest-fsfreeze-freeze) makes the agent sync and freeze every
// filesystem the guest has mounted (FIFREEZE on Linux, VSS on Windows),
// running its fsfreeze hook first if it has one; writes in the guest
// then block until ThawFS. A freeze that timed out may still happen in
// the guest: whoever froze, or tried to, must thaw, also after an error
// (the thaw is queued behind the freeze, so it lands after it).
package guestagent
