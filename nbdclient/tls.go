package nbdclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// TLSFiles are what a client needs for an nbds URI (vhd backup pull's
// --tls-ca, --tls-cert, --tls-key and --tls-server-name). Each left
// empty is taken from the URI's tls-certificates=DIR when that holds the
// file (ca-cert.pem, client-cert.pem, client-key.pem); with no CA the
// system's pool verifies the server, and with no certificate none is
// presented.
type TLSFiles struct {
	CA, Cert, Key string
	// ServerName is the name the server's certificate must hold (the
	// URI's host if empty).
	ServerName string
}

// TLSConfig builds the client's TLS configuration for u from f and u's
// tls-certificates directory: TLS 1.2 or later, the server verified.
func (u *URI) TLSConfig(f TLSFiles) (*tls.Config, error) {
	if !u.TLS {
		return nil, fmt.Errorf("nbd: TLS files given for %s, a plaintext URI: write nbds:// (or nbds+unix://) to use TLS", u)
	}
	f.fillFrom(u.CertDir)
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("nbd: a TLS client certificate needs its key and a key its certificate: give both or neither")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Host
	}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("nbd: reading the TLS CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nbd: %s holds no PEM certificate: give the CA certificate that signed the server's", f.CA)
		}
	}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("nbd: TLS client certificate %s with key %s: %w", f.Cert, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// fillFrom takes the files f does not name from dir, libnbd's layout,
// when they exist there.
func (f *TLSFiles) fillFrom(dir string) {
	if dir == "" {
		return
	}
	take := func(field *string, name string) {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); *field == "" && !errors.Is(err, fs.ErrNotExist) {
			*field = p
		}
	}
	take(&f.CA, "ca-cert.pem")
	if f.Cert == "" && f.Key == "" {
		take(&f.Cert, "client-cert.pem")
		take(&f.Key, "client-key.pem")
	}
}

// explainTLS says which check failed when the TLS handshake, or the
// first read after it, fails: the server's certificate (by which
// check), or the server refusing ours.
func explainTLS(err error, cfg *tls.Config) error {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var remote *net.OpError
	switch {
	case errors.As(err, &unknown):
		trust := "the system's CAs: name the CA that signed it (--tls-ca FILE)"
		if cfg.RootCAs != nil {
			trust = "the CA file given: is it the CA that signed the server's certificate?"
		}
		return fmt.Errorf("nbd: TLS: the server's certificate is not signed by a CA trusted here, %s: %w", trust, err)
	case errors.As(err, &host):
		return fmt.Errorf("nbd: TLS: the server's certificate is not for the name %q: connect by a name it holds, or name one (--tls-server-name NAME): %w", cfg.ServerName, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("nbd: TLS: the server's certificate is not valid (expired, not yet valid, or not for a server): %w", err)
	case errors.As(err, &remote) && remote.Op == "remote error" && isCertAlert(remote.Err):
		if len(cfg.Certificates) == 0 {
			return fmt.Errorf("nbd: TLS: the server wants a client certificate and none was given (--tls-cert FILE --tls-key FILE): %w", err)
		}
		return fmt.Errorf("nbd: TLS: the server refused the client certificate: is it signed by the CA the server trusts ('vhd serve --tls-ca FILE')? %w", err)
	}
	return err
}

// hungUpAfterTLS explains a server that ends the connection right
// after the TLS handshake, before any reply and without an alert: what
// a server that checks client certificates after the handshake does
// (qemu-nbd) when it does not like ours, or we gave none.
func hungUpAfterTLS(err error, cfg *tls.Config) error {
	gone := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	if !gone {
		return err
	}
	if len(cfg.Certificates) == 0 {
		return fmt.Errorf("nbd: TLS: the server hung up right after the TLS handshake, before any reply: it likely wants a client certificate, and none was given (--tls-cert FILE --tls-key FILE): %w", err)
	}
	return fmt.Errorf("nbd: TLS: the server hung up right after the TLS handshake, before any reply: it likely refused the client certificate: is it signed by the CA the server trusts? %w", err)
}

// isCertAlert reports whether a TLS alert from the server is about the
// client's certificate (missing, bad, or from a CA it does not know).
func isCertAlert(alert error) bool {
	s := alert.Error()
	for _, a := range []string{"certificate required", "bad certificate", "unknown certificate authority", "certificate unknown"} {
		if strings.Contains(s, a) {
			return true
		}
	}
	return false
}
