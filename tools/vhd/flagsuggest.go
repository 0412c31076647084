package main

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// Other tools' flags for what a vhd command spells its own way, answered
// with the vhd spelling (an answer starting with "-") or a sentence
// saying what vhd does instead. A key is a long flag's bare name or a
// short flag with its dash ("-k"), so that the flag walk
// (flagwalk_test.go) holds the answers, not the other tool's names, to
// the command's flags.
var (
	// qemuNBDFlags are qemu-nbd's, for vhd serve.
	qemuNBDFlags = map[string]string{
		"-k":               "--socket PATH (qemu-nbd's -k)",
		"-e":               "--max-connections N (qemu-nbd's -e)",
		"shared":           "--max-connections N (qemu-nbd's -e)",
		"-x":               "the export name follows the image: vhd serve disk.vhd=NAME (qemu-nbd's -x)",
		"export-name":      "the export name follows the image: vhd serve disk.vhd=NAME",
		"-t":               "vhd serve always persists: it serves until it is stopped, whoever connects or leaves (qemu-nbd's -t)",
		"persistent":       "vhd serve always persists: it serves until it is stopped, whoever connects or leaves",
		"-s":               "--undo: writes go to IMAGE.vud, kept until 'vhd undo commit|discard IMAGE' (qemu-nbd's -s)",
		"snapshot":         "--undo: writes go to IMAGE.vud, kept until 'vhd undo commit|discard IMAGE'",
		"-b":               "--listen HOST:PORT (qemu-nbd's -b and -p together)",
		"bind":             "--listen HOST:PORT (qemu-nbd's -b and -p together)",
		"port":             "--listen HOST:PORT (qemu-nbd's -b and -p together)",
		"-D":               "--description TEXT (qemu-nbd's -D)",
		"max-clients":      "--max-connections N",
		"-c":               "vhd serve does not attach /dev/nbd devices; attach one to its socket with 'nbd-client -unix SOCKET /dev/nbd0', or mount the image with 'vhd mount'",
		"connect":          "vhd serve does not attach /dev/nbd devices; attach one to its socket with 'nbd-client -unix SOCKET /dev/nbd0', or mount the image with 'vhd mount'",
		"-d":               "a device attached with nbd-client is detached with 'nbd-client -d /dev/nbd0'",
		"tls-creds":        "--tls-cert FILE --tls-key FILE [--tls-ca FILE] (PEM files, not a QEMU object)",
		"-B":               "changed blocks are tracked by 'vhd backup begin' and read as the vhdkit:changed meta context (qemu-nbd's -B)",
		"bitmap":           "changed blocks are tracked by 'vhd backup begin' and read as the vhdkit:changed meta context",
		"cache":            "vhd serve has no cache to choose: every write reaches the image as the client sends it, and NBD FLUSH makes it durable",
		"aio":              "vhd serve chooses its own I/O",
		"detect-zeroes":    "zero writes already free or skip space (fast zero, NBD_CMD_WRITE_ZEROES)",
		"discard":          "trims are always passed to the image",
		"-A":               "base:allocation is always offered, and 'vhd map IMAGE' says which layer holds each run",
		"allocation-depth": "base:allocation is always offered, and 'vhd map IMAGE' says which layer holds each run",
	}
	// qemuImgCreateFlags are qemu-img create's, for vhd create.
	qemuImgCreateFlags = map[string]string{
		"-F":            "the parent's format is read from it (a VHD): give --parent PARENT alone (qemu-img create's -F)",
		"backing-fmt":   "the parent's format is read from it (a VHD): give --parent PARENT alone",
		"backing":       "--parent PARENT (-b)",
		"preallocation": "--type fixed (the whole disk allocated, sparse on the host until written)",
	}
	// guestmountFlags are guestmount's, for vhd mount.
	guestmountFlags = map[string]string{
		"-a":        "the image is an argument: vhd mount IMAGE MOUNTPOINT (guestmount's -a)",
		"add":       "the image is an argument: vhd mount IMAGE MOUNTPOINT",
		"ro":        "--read-only (-r)",
		"-i":        "--fs: the filesystems inside appear under MOUNTPOINT/fs (guestmount's -i)",
		"inspector": "--fs: the filesystems inside appear under MOUNTPOINT/fs",
		"-m":        "--fs: every filesystem appears under MOUNTPOINT/fs, one folder a partition (guestmount's -m)",
		"mount":     "--fs: every filesystem appears under MOUNTPOINT/fs, one folder a partition",
		"rw":        "vhd mount writes unless --read-only (to an undo disk unless --no-undo)",
		"-o":        "--allow-other and --umask MASK (FUSE's -o allow_other,umask=)",
		"no-fork":   "--foreground",
	}
)

var (
	unknownLong  = regexp.MustCompile(`^unknown flag: (--[^ =]+)$`)
	unknownShort = regexp.MustCompile(`^unknown shorthand flag: '(.)' in -`)
)

// unknownFlagText answers an unknown flag with the vhd spelling of
// another tool's flag, or the nearest flag of the command, or says
// where the flags are listed; "" when err is not an unknown flag.
func unknownFlagText(cmd *command, fs *pflag.FlagSet, err error) string {
	flag := ""
	if m := unknownLong.FindStringSubmatch(err.Error()); m != nil {
		flag = m[1]
	} else if m := unknownShort.FindStringSubmatch(err.Error()); m != nil {
		flag = "-" + m[1]
	} else {
		return ""
	}
	if len(flag) == 2 && flag[1] >= '0' && flag[1] <= '9' {
		// resize IMAGE -16M, qemu-img's order: a negative number.
		return fmt.Sprintf("unknown flag %s: a negative number is read as flags; put the arguments after -- ('vhd %s -- ARGS')", flag, cmd.name)
	}
	key := strings.TrimPrefix(flag, "--")
	if s, ok := cmd.otherFlags[key]; ok {
		if strings.HasPrefix(s, "-") {
			s = fmt.Sprintf("vhd %s spells it %s", cmd.name, s)
		}
		return fmt.Sprintf("unknown flag %s: %s", flag, s)
	}
	if near := nearestFlags(fs, strings.TrimLeft(flag, "-")); len(near) > 0 {
		return fmt.Sprintf("unknown flag %s; did you mean %s?", flag, strings.Join(near, " or "))
	}
	return fmt.Sprintf("unknown flag %s", flag)
}

// nearestFlags are the command's long flags name may have meant: those
// it begins (2 letters or more: --js, --tls), else the one it begins
// with (--fuse-dir), else the nearest within two edits (one for short
// names), each as "--NAME"; none if nothing is near.
func nearestFlags(fs *pflag.FlagSet, name string) []string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Usage != "" { // hidden plumbing flags have none
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	var prefixed []string
	within, best, bestDist := "", "", 3
	for _, n := range names {
		if len(name) >= 2 && strings.HasPrefix(n, name) {
			prefixed = append(prefixed, "--"+n)
		}
		if strings.HasPrefix(name, n+"-") && len(n) > len(within) {
			within = n
		}
		if d := editDistance(name, n); d < bestDist {
			best, bestDist = n, d
		}
	}
	switch {
	case len(prefixed) > 0:
		return prefixed
	case within != "":
		return []string{"--" + within}
	case best == "" || len(name) < 4 && bestDist > 1:
		return nil // two edits from a short word is anything
	}
	return []string{"--" + best}
}
