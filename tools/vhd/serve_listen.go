package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"vhdkit/nbdserve"
)

// defaultSocket is where vhd serve listens when told nothing: in a
// folder only this user may write (socketDir, statedir.go).
func defaultSocket() (string, error) {
	dir, err := socketDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, fmt.Sprintf("vhd-serve-%d.sock", os.Getpid())), nil
}

// listen opens the listeners asked for and returns them with one URI per
// export and listener.
func listen(o *serveOptions, srv *nbdserve.Server) ([]net.Listener, []string, error) {
	var ls []net.Listener
	var uris []string
	fail := func(err error) ([]net.Listener, []string, error) {
		for _, l := range ls {
			l.Close()
		}
		return nil, nil, err
	}
	names := make([]string, 0, len(srv.Exports))
	for n := range srv.Exports {
		names = append(names, n)
	}
	sort.Strings(names)
	scheme := "nbd"
	if srv.TLSConfig != nil {
		scheme = "nbds"
	}
	if o.socketGiven || !o.listenGiven {
		path := o.socket
		if path == "" {
			var err error
			if path, err = defaultSocket(); err != nil {
				return fail(err)
			}
		}
		l, err := listenUnix(path)
		if err != nil {
			return fail(err)
		}
		ls = append(ls, l)
		for _, n := range names {
			uris = append(uris, fmt.Sprintf("%s+unix:///%s?socket=%s", scheme, url.PathEscape(n), path))
		}
	}
	if o.listenGiven {
		addr, err := tcpAddr(o.listen)
		if err != nil {
			return fail(err)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(err)
		}
		ls = append(ls, l)
		for _, n := range names {
			uris = append(uris, fmt.Sprintf("%s://%s/%s", scheme, l.Addr(), url.PathEscape(n)))
		}
	}
	return ls, uris, nil
}

// tcpAddr fills in 127.0.0.1 when the host is left out: TCP is exposed
// beyond the machine only when the user names an address.
func tcpAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("--listen %q: %w (want HOST:PORT)", s, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

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
	addr, err := tcpAddr(o.listen)
	if err != nil {
		return usageErr("%v", err)
	}
	host, _, _ := net.SplitHostPort(addr)
	if local, known := loopbackOnly(host); local || !known {
		return nil // a name that does not resolve fails in net.Listen
	}
	return usageErr("--listen %s is reachable from other machines and NBD has no password: require client certificates with --tls-cert, --tls-key and --tls-ca, or add --insecure-tcp to let anyone who reaches the port read and write the disks", o.listen)
}

// loopbackOnly reports whether host means only this machine: a loopback
// address, or a name whose addresses are all loopback (localhost).
// known is false when the name does not resolve.
func loopbackOnly(host string) (local, known bool) {
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback(), true
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false, false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false, true
		}
	}
	return true, true
}

// listenUnix listens on path, replacing a stale socket nobody answers on
// but never another file or a live server's socket.
func listenUnix(path string) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another server is listening there", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		os.Remove(path)
	}
	return net.Listen("unix", path)
}

// loadTLS builds the server's TLS configuration: TLS 1.2 or later, and
// client certificates required and verified when a CA is given.
func loadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate found", caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
