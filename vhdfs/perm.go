package vhdfs

import "fmt"

// Who may use a mount. Everything in it belongs to the user who mounted
// (Options' UID and GID are the process's), and the kernel checks every
// access against the modes the mount shows: the mount carries the
// default_permissions option. The handlers never see who is calling, so
// without it any user that allow_other lets in could write a disk whose
// mode says otherwise.
//
// The owner may read, and write unless the mount is read-only.
// Options.GroupOtherPerm adds group and other bits: 0o044 lets them
// read, 0o066 write too; by default nobody else gets anything. A
// read-only mount shows no write bits at all, info.json is never
// writable, and folders show a search bit for each class that may read
// (they hold no files a user can create, so no write bit either).

// groupOtherRW are the bits Options.GroupOtherPerm may hold.
const groupOtherRW = 0o066

// perms are the permission bits of a mount's nodes.
type perms struct {
	data uint32 // disk and partition files
	info uint32 // info.json
	dir  uint32 // the root, fs/ and its folders
}

// newPerms works out a mount's modes, refusing bits it cannot give.
func newPerms(groupOther uint32, readOnly bool) (perms, error) {
	if groupOther&^groupOtherRW != 0 {
		return perms{}, fmt.Errorf("vhdfs: GroupOtherPerm %#o: only group and other read and write bits (%#o) can be granted", groupOther, groupOtherRW)
	}
	data := 0o600 | groupOther
	if readOnly {
		data &^= 0o222
	}
	read := data & 0o444
	return perms{data: data, info: read, dir: read | read>>2}, nil
}
