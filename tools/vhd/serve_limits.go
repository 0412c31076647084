package main

import (
	"time"

	"github.com/spf13/pflag"

	"vhdkit/nbdserve"
)

// serveLimits are the flags that bound what clients can hold: memory,
// time, and how long shutdown waits for them.
type serveLimits struct {
	memory           sizeFlag
	stallTimeout     time.Duration
	shutdownGrace    time.Duration
	handshakeTimeout time.Duration
	maxConnections   int
}

func addServeLimits(fs *pflag.FlagSet) *serveLimits {
	l := &serveLimits{}
	fs.Var(&l.memory, "memory-budget", "memory for request data of all clients together (default 128M); a request that does not fit waits")
	fs.DurationVar(&l.stallTimeout, "stall-timeout", nbdserve.DefaultStallTimeout, "disconnect a client that takes none of a reply, or sends none of a WRITE's data, for this long")
	fs.DurationVar(&l.shutdownGrace, "shutdown-grace", nbdserve.DefaultShutdownGrace, "on SIGINT/SIGTERM, wait this long for requests in flight, then close the connections still busy")
	fs.DurationVar(&l.handshakeTimeout, "handshake-timeout", nbdserve.DefaultHandshakeTimeout, "disconnect a client that has not finished negotiating after this long")
	fs.IntVar(&l.maxConnections, "max-connections", nbdserve.DefaultMaxConnections, "connections per listener; when full, the one negotiating or idle longest makes room for a new client")
	return l
}

func (l *serveLimits) validate() error {
	if l.memory.set && l.memory.n < 1<<20 {
		return usageErr("--memory-budget %d: want at least 1M", l.memory.n)
	}
	if l.stallTimeout <= 0 {
		return usageErr("--stall-timeout %v: want a positive duration (30s, 2m)", l.stallTimeout)
	}
	if l.shutdownGrace <= 0 {
		return usageErr("--shutdown-grace %v: want a positive duration (5s, 1m)", l.shutdownGrace)
	}
	if l.handshakeTimeout <= 0 {
		return usageErr("--handshake-timeout %v: want a positive duration (10s)", l.handshakeTimeout)
	}
	if l.maxConnections < 1 {
		return usageErr("--max-connections %d: want at least 1", l.maxConnections)
	}
	return nil
}

func (l *serveLimits) apply(srv *nbdserve.Server) {
	if l.memory.set {
		srv.MemoryBudget = l.memory.n
	}
	srv.StallTimeout = l.stallTimeout
	srv.ShutdownGrace = l.shutdownGrace
	srv.HandshakeTimeout = l.handshakeTimeout
	srv.MaxConnections = l.maxConnections
}
