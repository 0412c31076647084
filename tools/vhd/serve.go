package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/spf13/pflag"

	"vhdkit/engine"
	"vhdkit/nbdserve"
)

const serveUsage = `usage: vhd serve [--socket PATH] [--listen HOST:PORT] [--read-only]
                 [--tls-cert FILE --tls-key FILE [--tls-ca FILE]] IMAGE[=NAME]...

Exports each IMAGE over NBD under NAME (default: the file name without
its extension); a single image is also the default export "". Without
--socket or --listen it listens on a unix socket in $XDG_RUNTIME_DIR.
Each export's URI is printed on standard output, one per line.
SIGINT or SIGTERM stops accepting, finishes the requests in flight,
flushes and closes the images.

Images open for writing (one writer per image) unless --read-only.
With --tls-cert and --tls-key, TLS is required of every client; with
--tls-ca, clients must also present a certificate signed by that CA.

`

// serveOptions are the parsed command line of vhd serve.
type serveOptions struct {
	socket, listen           string
	readOnly                 bool
	tlsCert, tlsKey, tlsCA   string
	exports                  []exportArg
	socketGiven, listenGiven bool
}

type exportArg struct{ path, name string }

// runServe is `vhd serve`. Exit status: 0 after a clean shutdown, 1 when
// an image cannot be served, 2 on a usage error.
func runServe(ctx context.Context, args []string) int {
	opts, err := parseServe(args, os.Stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vhd serve: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := serve(ctx, opts, os.Stdout, log); err != nil {
		fmt.Fprintf(os.Stderr, "vhd serve: %v\n", err)
		return 1
	}
	return 0
}

func parseServe(args []string, stderr io.Writer) (*serveOptions, error) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, serveUsage)
		fs.PrintDefaults()
	}
	o := &serveOptions{}
	fs.StringVar(&o.socket, "socket", "", "listen on this unix socket (default: $XDG_RUNTIME_DIR/vhd-serve-PID.sock)")
	fs.StringVar(&o.listen, "listen", "", "listen on TCP HOST:PORT (HOST defaults to 127.0.0.1)")
	fs.BoolVar(&o.readOnly, "read-only", false, "export the images read-only")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "server certificate (PEM); makes TLS mandatory")
	fs.StringVar(&o.tlsKey, "tls-key", "", "server private key (PEM)")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "CA (PEM) that client certificates must chain to")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.socketGiven, o.listenGiven = fs.Changed("socket"), fs.Changed("listen")
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if o.tlsCA != "" && o.tlsCert == "" {
		return nil, errors.New("--tls-ca needs --tls-cert and --tls-key")
	}
	if fs.NArg() == 0 {
		return nil, errors.New("no image to serve (see vhd serve --help)")
	}
	seen := map[string]string{}
	for _, a := range fs.Args() {
		e := parseExportArg(a)
		if e.name == "" {
			return nil, fmt.Errorf("%q: export name is empty", a)
		}
		if prev, dup := seen[e.name]; dup {
			return nil, fmt.Errorf("%s and %s would both be exported as %q; name one with IMAGE=NAME", prev, e.path, e.name)
		}
		seen[e.name] = e.path
		o.exports = append(o.exports, e)
	}
	return o, nil
}

// parseExportArg splits IMAGE=NAME. A path may itself hold '=': only a
// last '=' followed by no '/' starts a name.
func parseExportArg(a string) exportArg {
	if i := strings.LastIndexByte(a, '='); i > 0 && !strings.ContainsRune(a[i+1:], '/') {
		return exportArg{path: a[:i], name: a[i+1:]}
	}
	base := filepath.Base(a)
	return exportArg{path: a, name: strings.TrimSuffix(base, filepath.Ext(base))}
}

// serve opens the images, listens, prints the URIs and serves until ctx
// ends; then it closes the images (flushing them).
func serve(ctx context.Context, o *serveOptions, stdout io.Writer, log *slog.Logger) (err error) {
	srv := &nbdserve.Server{Exports: map[string]*nbdserve.Export{}, Logger: log}
	defer func() {
		for _, e := range srv.Exports {
			if cerr := e.Disk.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close %s: %w", e.Description, cerr)
			}
		}
	}()
	for _, a := range o.exports {
		img, err := engine.Open(a.path, engine.Options{ReadOnly: o.readOnly, Logger: log})
		if err != nil {
			return err
		}
		if img.Type() == engine.TypeDifferencing {
			img.Close()
			return fmt.Errorf("%s is a differencing image: serving chains comes with the chains package", a.path)
		}
		srv.Exports[a.name] = &nbdserve.Export{Name: a.name, Description: filepath.Base(a.path), Disk: img}
	}
	if len(o.exports) == 1 {
		srv.Default = o.exports[0].name
	}
	if o.tlsCert != "" {
		if srv.TLSConfig, err = loadTLS(o.tlsCert, o.tlsKey, o.tlsCA); err != nil {
			return err
		}
	}
	listeners, uris, err := listen(o, srv)
	if err != nil {
		return err
	}
	for _, u := range uris {
		fmt.Fprintln(stdout, u)
	}
	// One listener failing stops them all: they share the connections.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(listeners))
	for i, l := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			errs[i] = srv.Serve(ctx, l)
		}()
	}
	wg.Wait()
	for _, l := range listeners {
		if ul, ok := l.(*net.UnixListener); ok {
			os.Remove(ul.Addr().String())
		}
	}
	return errors.Join(errs...)
}
