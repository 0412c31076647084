package main

import (
	"github.com/spf13/pflag"

	"vhdkit/nbdclient"
)

// addTLSFlags adds the client's TLS files for an nbds:// URI (backup
// pull, convert from a server) into f; use prefixes each usage with the
// verb they apply to, if the command has several.
func addTLSFlags(fs *pflag.FlagSet, f *nbdclient.TLSFiles, use string) {
	fs.StringVar(&f.CA, "tls-ca", "", use+"CA (PEM) an nbds:// server's certificate must chain to (default: the system's CAs)")
	fs.StringVar(&f.Cert, "tls-cert", "", use+"client certificate (PEM) for a server that asks for one")
	fs.StringVar(&f.Key, "tls-key", "", use+"the client certificate's private key (PEM)")
	fs.StringVar(&f.ServerName, "tls-server-name", "", use+"the name the server's certificate must hold (default: the URI's host)")
}

// tlsGoesWith refuses --tls-* flags with a plaintext URI (or a file):
// they would be ignored, and the data would cross the network in the
// clear.
func tlsGoesWith(src string, f nbdclient.TLSFiles) error {
	if f == (nbdclient.TLSFiles{}) {
		return nil
	}
	if !nbdclient.IsURI(src) {
		return usageErr("--tls-ca, --tls-cert, --tls-key and --tls-server-name go with an nbds:// or nbds+unix:// URI, not the file %s", src)
	}
	u, err := nbdclient.ParseURI(src)
	if err == nil && !u.TLS {
		return usageErr("--tls-ca, --tls-cert, --tls-key and --tls-server-name go with an nbds:// or nbds+unix:// URI, not %s: write nbds:// to use TLS", src)
	}
	return nil
}
