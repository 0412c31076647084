package testguest

import (
	"bytes"
	"fmt"
)

// The initramfs is a cpio archive in the "newc" format: per file a
// 110-byte ASCII header, the name (NUL-terminated, padded to 4 bytes),
// the data (padded to 4 bytes); a last entry named TRAILER!!! ends it.
//
//	offset  size  field (8 hex digits each after the magic)
//	0       6     magic "070701"
//	6       8     inode      14  8  mode      22  8  uid
//	30      8     gid        38  8  nlink     46  8  mtime
//	54      8     filesize   62  8  devmajor  70  8  devminor
//	78      8     rdevmajor  86  8  rdevminor 94  8  namesize
//	102     8     check (0)

// archive writes a newc cpio archive.
type archive struct {
	buf   bytes.Buffer
	inode int
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
)

func (a *archive) add(name string, mode uint32, data []byte) {
	a.inode++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	fmt.Fprintf(&a.buf, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		a.inode, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	a.buf.WriteString(name)
	a.buf.WriteByte(0)
	a.pad()
	a.buf.Write(data)
	a.pad()
}

func (a *archive) pad() {
	for a.buf.Len()%4 != 0 {
		a.buf.WriteByte(0)
	}
}

func (a *archive) dir(name string)                  { a.add(name, modeDir|0o755, nil) }
func (a *archive) file(name string, data []byte)    { a.add(name, modeFile|0o644, data) }
func (a *archive) program(name string, data []byte) { a.add(name, modeFile|0o755, data) }

// bytes ends the archive and returns it.
func (a *archive) bytes() []byte {
	a.add("TRAILER!!!", 0, nil)
	return a.buf.Bytes()
}
