module vhdkit

go 1.26.0

require (
	github.com/dustin/go-humanize v1.1.0
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/spf13/pflag v1.0.10
	golang.org/x/sys v0.49.0
)

require (
	github.com/pilebones/go-udev v0.9.0 // indirect
	github.com/pojntfx/go-nbd v0.3.2
)
