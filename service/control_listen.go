package service

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// DefaultControlSocket is where vhd serve's control socket goes when
// told nothing: vhd's private folder (RuntimeDir, checked and made by
// the state folder rules, statedir.go), named after the process:
// $XDG_RUNTIME_DIR/vhdkit/serve-PID.ctl, /run/vhdkit/serve-PID.ctl as
// root, else $TMPDIR/vhdkit-UID/serve-PID.ctl.
func DefaultControlSocket() (string, error) {
	dir := RuntimeDir()
	if err := privateDir(dir); err != nil {
		return "", err
	}
	return controlSocketIn(dir, os.Getpid()), nil
}

func controlSocketIn(dir string, pid int) string {
	return filepath.Join(dir, fmt.Sprintf("serve-%d.ctl", pid))
}

// listenControl listens on path with the socket file's mode 0600 from
// the moment it exists: the socket's own mode is set to 0600 before it
// is bound (Linux creates the file with the socket's mode, less the
// umask), so there is no moment with a wider one, and the kernel's name
// for it (/proc/net/unix, which HolderHint reads) is path itself. A
// stale socket nobody answers on is removed first, as ListenUnix does;
// bind never replaces anything else.
func listenControl(path string) (*net.UnixListener, error) {
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // FileListener keeps a copy
	err = unix.Fchmod(fd, 0o600)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: path})
	}
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	l, err := listenOn(f)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return l, nil
}

// listenOn makes a bound socket listen and wraps it for net/http.
func listenOn(f *os.File) (*net.UnixListener, error) {
	if err := unix.Listen(int(f.Fd()), 128); err != nil {
		return nil, err
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	return l.(*net.UnixListener), nil
}
