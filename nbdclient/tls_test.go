package nbdclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/internal/testpki"
)

// The client's TLS against our own server (nbdserve with TLSConfig, the
// FORCEDTLS mode vhd serve runs): a CA, a server certificate for
// localhost and 127.0.0.1 and a client certificate, made here.

// testPKI writes a new CA's certificates (internal/testpki) into a new
// directory.
func testPKI(t *testing.T) string {
	dir := t.TempDir()
	testpki.Write(t, dir)
	return dir
}

// serverTLS is what vhd serve --tls-cert --tls-key [--tls-ca] sets up.
func serverTLS(t *testing.T, dir string, clientCerts bool) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCerts {
		pem, _ := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
		cfg.ClientCAs = x509.NewCertPool()
		cfg.ClientCAs.AppendCertsFromPEM(pem)
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

func dialTLS(uri string, f TLSFiles) (*Conn, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	cfg, err := u.TLSConfig(f)
	if err != nil {
		return nil, err
	}
	return DialURI(context.Background(), u, Options{MetaContexts: []string{"base:allocation"}, TLS: cfg})
}

// TestTLS: over nbds+unix with a client certificate the export reads as
// it is, block status works; files come from the flags or from the
// URI's tls-certificates directory.
func TestTLS(t *testing.T) {
	pki := testPKI(t)
	sock, model := serveImage(t, nil, serverTLS(t, pki, true), "unix")
	files := TLSFiles{CA: filepath.Join(pki, "ca-cert.pem"), Cert: filepath.Join(pki, "client-cert.pem"), Key: filepath.Join(pki, "client-key.pem")}
	for _, tc := range []struct {
		uri   string
		files TLSFiles
	}{
		{"nbds+unix:///disk?socket=" + sock, files},
		{"nbds+unix:///disk?socket=" + sock + "&tls-certificates=" + pki, TLSFiles{}},
	} {
		c, err := dialTLS(tc.uri, tc.files)
		if err != nil {
			t.Fatalf("%s: %v", tc.uri, err)
		}
		if _, ok := c.nc.(*tls.Conn); !ok {
			t.Errorf("%s: the connection is not TLS", tc.uri)
		}
		got := make([]byte, testSize)
		for off := int64(0); off < testSize; off += 4 << 20 {
			if err := c.ReadAt(context.Background(), got[off:off+4<<20], off); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, model) {
			t.Errorf("%s: reads differ from the disk", tc.uri)
		}
		if st, err := c.BlockStatus(context.Background(), 0, testSize); err != nil || len(st["base:allocation"]) != 7 {
			t.Errorf("%s: block status %v, %v", tc.uri, st, err)
		}
		c.Close()
	}
}

// TestTLSRefusals: every way TLS can fail ends the negotiation saying
// which check failed; none goes on in plaintext.
func TestTLSRefusals(t *testing.T) {
	pki, other := testPKI(t), testPKI(t)
	tlsSock, _ := serveImage(t, nil, serverTLS(t, pki, true), "unix")
	plainSock, _ := serveImage(t, nil, nil, "unix")
	ca := filepath.Join(pki, "ca-cert.pem")
	withCert := func(dir string) TLSFiles {
		return TLSFiles{CA: ca, Cert: filepath.Join(dir, "client-cert.pem"), Key: filepath.Join(dir, "client-key.pem")}
	}
	tlsURI := "nbds+unix:///disk?socket=" + tlsSock
	for _, tc := range []struct {
		what, uri string
		files     TLSFiles
		says      string
	}{
		{"no client certificate", tlsURI, TLSFiles{CA: ca}, "wants a client certificate and none was given"},
		{"a client certificate of another CA", tlsURI, withCert(other), "refused the client certificate"},
		{"the wrong CA", tlsURI, TLSFiles{CA: filepath.Join(other, "ca-cert.pem")}, "not signed by a CA trusted here, the CA file given"},
		{"the system CAs", tlsURI, TLSFiles{}, "not signed by a CA trusted here, the system's CAs"},
		{"another server name", tlsURI, TLSFiles{CA: ca, ServerName: "backup.example"}, `not for the name "backup.example"`},
		{"nbds to a plaintext server", "nbds+unix:///disk?socket=" + plainSock, withCert(pki), "the server does not offer TLS"},
		{"a certificate without its key", tlsURI, TLSFiles{CA: ca, Cert: filepath.Join(pki, "client-cert.pem")}, "give both"},
	} {
		c, err := dialTLS(tc.uri, tc.files)
		if err == nil {
			c.Close()
			t.Errorf("%s: let in", tc.what)
			continue
		}
		if !strings.Contains(err.Error(), tc.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v\nwant it to say %q", tc.what, err, tc.says)
		}
		t.Logf("%s: %v", tc.what, err)
	}
	_, err := Dial(context.Background(), "nbd+unix:///disk?socket="+tlsSock, Options{MetaContexts: []string{"base:allocation"}})
	if err == nil || !strings.Contains(err.Error(), "use an nbds:// URI") {
		t.Errorf("nbd:// to a TLS server: %v", err)
	}
	_, err = DialURI(context.Background(), &URI{Network: "unix", Address: plainSock, Export: "disk"}, Options{TLS: &tls.Config{}})
	if err == nil || !strings.Contains(err.Error(), "a plaintext URI") {
		t.Errorf("TLS configured for nbd://: %v", err)
	}
}

// TestTLSOverTCP: nbds://127.0.0.1:PORT verifies the certificate against
// the IP address, and --tls-server-name's name against its names.
func TestTLSOverTCP(t *testing.T) {
	pki := testPKI(t)
	addr, model := serveImage(t, nil, serverTLS(t, pki, false), "tcp")
	uri := "nbds://" + addr + "/disk"
	for _, name := range []string{"", "localhost"} {
		c, err := dialTLS(uri, TLSFiles{CA: filepath.Join(pki, "ca-cert.pem"), ServerName: name})
		if err != nil {
			t.Fatalf("server name %q: %v", name, err)
		}
		got := make([]byte, 4096)
		if err := c.ReadAt(context.Background(), got, 1<<20); err != nil || !bytes.Equal(got, model[1<<20:1<<20+4096]) {
			t.Errorf("server name %q: read %v", name, err)
		}
		c.Close()
	}
}

// TestTLSHostileStartTLS: a server that sends bytes between its STARTTLS
// reply and the TLS handshake (they would be read as if they came over
// TLS), or answers STARTTLS with something else than an ACK or an error,
// breaks the protocol; neither goes on in plaintext.
func TestTLSHostileStartTLS(t *testing.T) {
	greeting := cat(be64(nbdMagic), be64(optMagic), be16(flagFixedNewstyle|flagNoZeroes))
	reply := func(typ uint32, data []byte) []byte {
		return cat(be64(optReplyMagic), be32(optStartTLS), be32(typ), be32(uint32(len(data))), data)
	}
	for _, tc := range []struct {
		what  string
		after []byte
		says  string
	}{
		{"bytes after the ACK", cat(reply(repAck, nil), []byte("plaintext")), "bytes sent before the TLS handshake"},
		{"an INFO reply", reply(repInfo, cat(be16(infoExport), be64(1<<20), be16(1))), "STARTTLS answered with reply type 3"},
	} {
		l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.Write(greeting)
			io.ReadFull(c, make([]byte, 4+16)) // client flags, STARTTLS
			c.Write(tc.after)
			io.Copy(io.Discard, c)
		}()
		_, err = dialTLS("nbds+unix:///disk?socket="+l.Addr().String(), TLSFiles{})
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want ErrProtocol saying %q", tc.what, err, tc.says)
		}
		l.Close()
	}
}
