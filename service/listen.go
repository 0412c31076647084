package service

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// DefaultSocket is where vhd serve listens when told nothing: in a
// folder only this user may write (SocketDir, statedir.go), named after
// the process.
func DefaultSocket() (string, error) {
	dir, err := SocketDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, fmt.Sprintf("vhd-serve-%d.sock", os.Getpid())), nil
}

// ListenUnix makes the host listen on a unix socket at path, replacing
// a stale socket nobody answers on (never another file or a live
// server's socket). Run serves it; teardown removes the file.
func (h *Host) ListenUnix(path string) error {
	l, err := listenUnix(path)
	if err != nil {
		return err
	}
	if err := h.addListener(l); err != nil {
		l.Close()
		os.Remove(path)
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sockets = append(h.sockets, path)
	return nil
}

// ListenTCP makes the host listen on the TCP address addr (HOST:PORT;
// TCPAddr fills in the host). Run serves it. Whether the address may be
// reached from other machines is the caller's decision (doc.go).
func (h *Host) ListenTCP(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if err := h.addListener(l); err != nil {
		l.Close()
		return err
	}
	return nil
}

// addListener records a listener for Run to serve; only before Run.
func (h *Host) addListener(l net.Listener) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.phase != setup {
		return errors.New("service: listeners are added before Run")
	}
	h.listeners = append(h.listeners, l)
	return nil
}

// URIs are the NBD URIs of every export on every listener: listeners in
// the order they were made, exports sorted by name (nbds when the NBD
// server requires TLS).
func (h *Host) URIs() []string {
	h.mu.Lock()
	listeners := h.listeners
	h.mu.Unlock()
	names := h.ExportNames()
	scheme := "nbd"
	if h.nbd.TLSConfig != nil {
		scheme = "nbds"
	}
	var uris []string
	for _, l := range listeners {
		for _, n := range names {
			uris = append(uris, exportURI(scheme, l, n))
		}
	}
	return uris
}

// ExportURIs are the NBD URIs of one export, one per listener.
func (h *Host) ExportURIs(name string) []string {
	h.mu.Lock()
	listeners := h.listeners
	h.mu.Unlock()
	scheme := "nbd"
	if h.nbd.TLSConfig != nil {
		scheme = "nbds"
	}
	uris := []string{}
	for _, l := range listeners {
		uris = append(uris, exportURI(scheme, l, name))
	}
	return uris
}

// exportURI is the URI of export name on listener l.
func exportURI(scheme string, l net.Listener, name string) string {
	if ul, ok := l.(*net.UnixListener); ok {
		return fmt.Sprintf("%s+unix:///%s?socket=%s", scheme, url.PathEscape(name), ul.Addr())
	}
	return fmt.Sprintf("%s://%s/%s", scheme, l.Addr(), url.PathEscape(name))
}

// TCPAddr fills in 127.0.0.1 when the host is left out of HOST:PORT:
// TCP is exposed beyond the machine only when the user names an address.
func TCPAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q: %w (want HOST:PORT)", s, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// LoopbackOnly reports whether host means only this machine: a loopback
// address, or a name whose addresses are all loopback (localhost).
// known is false when the name does not resolve.
func LoopbackOnly(host string) (local, known bool) {
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
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	return net.Listen("unix", path)
}

// removeStaleSocket removes a socket at path that nobody answers on; any
// other file, or a socket a server listens on, is an error.
func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another server is listening there", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: %w", path, err)
	}
	os.Remove(path)
	return nil
}

// LoadTLS builds an NBD server's TLS configuration: TLS 1.2 or later, and
// client certificates required and verified when a CA is given.
func LoadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
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
