package nbdclient

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// URI is where an export is: a network ("unix" or "tcp"), an address,
// the export's name, and whether the connection must start TLS.
type URI struct {
	Network string
	Address string
	Export  string
	// TLS: an nbds URI; the connection starts TLS before anything else
	// and never goes on in plaintext.
	TLS bool
	// Host names the server for certificate verification: the URI's host
	// ("localhost" for a unix socket).
	Host string
	// CertDir is the URI's tls-certificates=DIR (libnbd's spelling): a
	// directory holding ca-cert.pem, and client-cert.pem with
	// client-key.pem, each used when present.
	CertDir string
}

// ParseURI reads an NBD URI (the NBD URI specification, as libnbd and
// vhd serve write them):
//
//	nbd+unix:///EXPORT?socket=PATH
//	nbd://HOST[:PORT][/EXPORT]            (port 10809 by default)
//	nbds+unix:///EXPORT?socket=PATH[&tls-certificates=DIR]
//	nbds://HOST[:PORT][/EXPORT][?tls-certificates=DIR]
//
// The export name is the path without its leading slash, unescaped; an
// empty one is the server's default export. nbds means TLS, which the
// client starts before any other option (see TLSFiles).
func ParseURI(s string) (*URI, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("nbd URI %q: %w", s, err)
	}
	out := &URI{Export: strings.TrimPrefix(u.Path, "/"), TLS: strings.HasPrefix(u.Scheme, "nbds")}
	q := u.Query()
	if dirs := q["tls-certificates"]; len(dirs) > 0 {
		if !out.TLS || len(dirs) > 1 || dirs[0] == "" {
			return nil, fmt.Errorf("nbd URI %q: tls-certificates=DIR goes once, with a non-empty DIR, in an nbds URI", s)
		}
		out.CertDir = dirs[0]
	}
	switch u.Scheme {
	case "nbd+unix", "nbds+unix":
		sock := q.Get("socket")
		if sock == "" || u.Host != "" {
			return nil, fmt.Errorf("nbd URI %q: want %s:///EXPORT?socket=PATH", s, u.Scheme)
		}
		out.Network, out.Address, out.Host = "unix", sock, "localhost"
		return out, nil
	case "nbd", "nbd+tcp", "nbds", "nbds+tcp":
		if name := u.Hostname(); name == "" || strings.Contains(name, ":") && net.ParseIP(name) == nil {
			return nil, fmt.Errorf("nbd URI %q: no host, or not one; want %s://HOST[:PORT]/EXPORT (an IPv6 address in brackets)", s, u.Scheme)
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "10809")
		}
		out.Network, out.Address, out.Host = "tcp", host, u.Hostname()
		return out, nil
	}
	return nil, fmt.Errorf("nbd URI %q: scheme %q is not one an NBD client dials: write nbd[s]://HOST[:PORT]/EXPORT or nbd[s]+unix:///EXPORT?socket=PATH", s, u.Scheme)
}

// queryPath escapes a path for a URI's query, leaving its slashes as
// they are (a query may hold them), so a socket's path reads as written.
func queryPath(p string) string { return strings.ReplaceAll(url.QueryEscape(p), "%2F", "/") }

// String writes the URI back in the form ParseURI reads.
func (u *URI) String() string {
	name := (&url.URL{Path: u.Export}).EscapedPath()
	scheme := "nbd"
	if u.TLS {
		scheme = "nbds"
	}
	certs := ""
	if u.CertDir != "" {
		certs = "tls-certificates=" + queryPath(u.CertDir)
	}
	if u.Network == "unix" {
		s := scheme + "+unix:///" + name + "?socket=" + queryPath(u.Address)
		if certs != "" {
			s += "&" + certs
		}
		return s
	}
	s := scheme + "://" + u.Address + "/" + name
	if certs != "" {
		s += "?" + certs
	}
	return s
}
