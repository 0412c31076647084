package service

import (
	"crypto/rand"
	"encoding/hex"
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
// the moment it has that name: it is bound under a fresh name beside
// path, narrowed to 0600, then renamed to path without replacing
// anything (a stale socket nobody answers on is removed first, as
// ListenUnix does; any other file makes it fail). Binding at path
// directly would give it the umask's mode for a moment.
func listenControl(path string) (*net.UnixListener, error) {
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(path), ".ctl-"+hex.EncodeToString(rnd[:]))
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // its name changes; the host removes path
	err = os.Chmod(tmp, 0o600)
	if err == nil {
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
	}
	if err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return l, nil
}
