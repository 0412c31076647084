package nbdclient

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// URI is where an export is: a network ("unix" or "tcp"), an address and
// the export's name.
type URI struct {
	Network string
	Address string
	Export  string
}

// ParseURI reads an NBD URI (the NBD URI specification, as libnbd and
// vhd serve write them):
//
//	nbd+unix:///EXPORT?socket=PATH
//	nbd://HOST[:PORT][/EXPORT]            (port 10809 by default)
//
// The export name is the path without its leading slash, unescaped; an
// empty one is the server's default export. TLS (nbds://) is refused:
// this client does not speak it.
func ParseURI(s string) (*URI, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("nbd URI %q: %w", s, err)
	}
	export := strings.TrimPrefix(u.Path, "/")
	switch u.Scheme {
	case "nbd+unix":
		sock := u.Query().Get("socket")
		if sock == "" || u.Host != "" {
			return nil, fmt.Errorf("nbd URI %q: want nbd+unix:///EXPORT?socket=PATH", s)
		}
		return &URI{Network: "unix", Address: sock, Export: export}, nil
	case "nbd", "nbd+tcp":
		if u.Host == "" {
			return nil, fmt.Errorf("nbd URI %q: no host; want nbd://HOST[:PORT]/EXPORT", s)
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "10809")
		}
		return &URI{Network: "tcp", Address: host, Export: export}, nil
	case "nbds", "nbds+unix":
		return nil, fmt.Errorf("nbd URI %q: TLS (%s) is not supported by this client; reach the server over a unix socket or plain nbd://", s, u.Scheme)
	}
	return nil, fmt.Errorf("nbd URI %q: scheme %q is not one an NBD client dials: write nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH", s, u.Scheme)
}

// String writes the URI back in the form ParseURI reads.
func (u *URI) String() string {
	name := (&url.URL{Path: u.Export}).EscapedPath()
	if u.Network == "unix" {
		return "nbd+unix:///" + name + "?socket=" + url.QueryEscape(u.Address)
	}
	return "nbd://" + u.Address + "/" + name
}
