package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"

	"vhdkit/engine"
)

// sizeHelp is how sizes are written on the command line; help texts
// quote it.
const sizeHelp = `Sizes are bytes, or a number with a unit K, M, G, T or P, optionally
followed by "iB" or "B": every unit is a power of 1024, as in qemu-img,
so 10G, 10GB and 10GiB all mean 10737418240 bytes. Fractions are
allowed (1.5T).`

// parseSize parses a size as sizeHelp describes.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("size %q: want a whole number of bytes or a number with a unit (10G, 512M, 1.5T)", s)
		}
		return n, nil
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	if num == "" || len(unit) > 1 || unit != "" && !strings.Contains("KMGTP", unit) {
		return 0, fmt.Errorf("size %q: want a number and a unit K, M, G, T or P (powers of 1024), e.g. 10G", s)
	}
	// go-humanize reads IEC units as powers of 1024.
	n, err := humanize.ParseBytes(num + unit + "iB")
	if unit == "" {
		n, err = humanize.ParseBytes(num)
	}
	if err != nil || n > 1<<62 {
		return 0, fmt.Errorf("size %q: %v", s, errOr(err, "too large"))
	}
	return int64(n), nil
}

func errOr(err error, msg string) string {
	if err != nil {
		return err.Error()
	}
	return msg
}

// sizeFlag is a pflag.Value holding a size.
type sizeFlag struct {
	n   int64
	set bool
}

func (f *sizeFlag) String() string {
	if !f.set {
		return ""
	}
	return strconv.FormatInt(f.n, 10)
}

func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	f.n, f.set = n, true
	return nil
}

func (f *sizeFlag) Type() string { return "SIZE" }

// blockSizeFlag is --block-size: a size that must be a VHD block size, so
// a bad one is a bad command line (exit 2), refused before any file is
// made.
type blockSizeFlag struct{ sizeFlag }

func (f *blockSizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	if n < engine.MinBlockSize || n > engine.MaxBlockSize || n&(n-1) != 0 {
		return fmt.Errorf("want a power of two from 512 bytes to 256M (%d is not)", n)
	}
	f.n, f.set = n, true
	return nil
}

// human renders a size both ways: "10 GiB (10737418240 bytes)".
func human(n int64) string {
	return fmt.Sprintf("%s (%d bytes)", humanize.IBytes(uint64(max(n, 0))), n)
}
