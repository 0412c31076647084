package main

import (
	"strconv"
	"strings"
)

// What other users may do in a `vhd mount` is what the modes say: the
// kernel enforces them (vhdfs/perm.go). The files belong to the user who
// mounted, who may read and (unless --read-only) write; --umask takes
// bits away from group and others, as the umask= option of vfat, ntfs-3g
// or sshfs mounts does. The default, 077, leaves others nothing: a disk
// is all of a machine's data, so sharing it is asked for, never assumed.
// --allow-other only lets other users past FUSE's own gate; without it
// the kernel refuses them whatever the modes.

// defaultUmask leaves the owner alone with the disk.
const defaultUmask = "077"

// parseUmask turns --umask into the group and other bits the mount
// grants. The owner's bits cannot be masked (--read-only refuses
// writes); execute bits are ignored, as nothing in a mount runs.
func parseUmask(s string) (uint32, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	if err != nil || v > 0o777 {
		return 0, usageErr("--umask %q: want an octal mask such as 077 (the owner alone), 027 (the group reads) or 022 (everyone reads)", s)
	}
	if v&0o700 != 0 {
		return 0, usageErr("--umask %s masks the owner's bits: the owner always reads, and writes unless --read-only", s)
	}
	return 0o066 &^ uint32(v), nil
}
