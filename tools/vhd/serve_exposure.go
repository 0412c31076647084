package main

import (
	"net"

	"vhdkit/service"
)

// checkExposure refuses a TCP listener beyond this machine unless
// clients must authenticate (TLS with client certificates: --tls-ca) or
// the user says --insecure-tcp: NBD itself has no authentication, so
// anyone who can reach the port could read and write the disks. TLS
// without --tls-ca encrypts but lets any client in, so it does not
// count. Checked before anything listens.
func (o *serveOptions) checkExposure() error {
	if !o.listenGiven || o.insecureTCP || o.tlsCA != "" {
		return nil
	}
	addr, err := service.TCPAddr(o.listen)
	if err != nil {
		return usageErr("--listen %v", err)
	}
	host, _, _ := net.SplitHostPort(addr)
	if local, known := service.LoopbackOnly(host); local || !known {
		return nil // a name that does not resolve fails in net.Listen
	}
	return usageErr("--listen %s is reachable from other machines and NBD has no password: require client certificates with --tls-cert, --tls-key and --tls-ca, or add --insecure-tcp to let anyone who reaches the port read and write the disks", o.listen)
}
