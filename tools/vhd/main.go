// Command vhd is vhdkit's command line.
//
// PLACEHOLDER: this main.go exists only on the nbd branch so `vhd serve`
// can be built and tested; the CLI branch owns the real main.go, and the
// lead replaces this file with it at merge (keeping the "serve" entry,
// runServe in serve.go).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: vhd serve [flags] IMAGE[=NAME]...  (placeholder main; see vhd serve --help)")
		return 2
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:])
	}
	fmt.Fprintf(os.Stderr, "vhd: unknown command %q (this placeholder build has only serve)\n", args[0])
	return 2
}
