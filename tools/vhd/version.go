package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/pflag"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = ""

var versionCmd = &command{
	name:    "version",
	args:    "[--json]",
	summary: "print the version of vhd",
	setup: func(fs *pflag.FlagSet) runFunc {
		asJSON := fs.Bool("json", false, "print {\"version\", \"go\", \"platform\"} as JSON")
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			v := buildVersion()
			platform := runtime.GOOS + "/" + runtime.GOARCH
			if *asJSON {
				return writeJSON(e, map[string]string{"version": v, "go": runtime.Version(), "platform": platform})
			}
			fmt.Fprintf(e.stdout, "vhd %s (vhdkit, %s, %s)\n", v, runtime.Version(), platform)
			return nil
		}
	},
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// writeJSON prints v as indented JSON on stdout.
func writeJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
