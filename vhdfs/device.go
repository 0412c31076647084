package vhdfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// fuseDevice is the kernel's FUSE device: root opens it to mount, and
// fusermount3 opens it for everyone else, as the calling user.
const fuseDevice = "/dev/fuse"

// checkDevice says, before any mount is tried, what to do when this
// process cannot open the FUSE device: otherwise the error surfaces as
// "fusermount exited with code 256" with the reason buried in its
// output.
func checkDevice() error {
	f, err := os.OpenFile(fuseDevice, os.O_RDWR, 0)
	if err == nil {
		return f.Close()
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("this machine has no %s: load the fuse module (modprobe fuse) or, in a container, pass the device in", fuseDevice)
	case errors.Is(err, fs.ErrPermission):
		mode := "unknown"
		if st, serr := os.Stat(fuseDevice); serr == nil {
			mode = fmt.Sprintf("%#o", st.Mode().Perm())
		}
		return fmt.Errorf("cannot open %s (permission denied, its mode is %s): a user's FUSE mount needs read and write access to it (most systems make it 0666); run as root or ask an administrator to allow it", fuseDevice, mode)
	}
	return fmt.Errorf("open %s: %w", fuseDevice, err)
}
