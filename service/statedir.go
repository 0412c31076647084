package service

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// The folders vhd keeps state, logs and sockets in, and the files in
// them, are trusted only when they are this user's alone. Without
// XDG_RUNTIME_DIR the state folder has a predictable name in a folder
// every user writes ($TMPDIR/vhdkit-UID): another user could make it
// first and then read the state, plant a symlink where vhd writes a log
// (truncating whatever it points at), or forge a state file that steers
// `vhd umount`. So:
//
//   - a private folder (privateDir) is made with mkdir 0700, then opened
//     with O_NOFOLLOW and checked through the open descriptor: a real
//     folder, owned by the effective user, mode exactly 0700. A folder
//     that fails is refused with what to do, never repaired: it may be
//     someone else's. One that vhd just made is set to 0700 whatever
//     the umask.
//   - the folder it sits in must be trusted (trustedParent): owned by
//     this user or root, and writable by others only if sticky (/tmp),
//     so nobody else can rename the private folder away after the check.
//   - files are written to a fresh name (O_CREAT|O_EXCL|O_NOFOLLOW) and
//     renamed into place; a log is opened with O_NOFOLLOW and truncated
//     only after fstat shows a regular file of ours.
//   - files are read with O_NOFOLLOW and used only if fstat shows a
//     regular file owned by this user.
//   - `vhd serve`'s default socket goes in the user's runtime folder
//     only if it is theirs and nobody else may write it (ownFolder),
//     else in the private folder: never in the bare temporary folder.

// runtimeDir is vhd's private folder for state and logs. Only its path:
// MountsFolder and SocketDir check it before use.
func RuntimeDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "vhdkit")
	}
	if os.Geteuid() == 0 {
		return "/run/vhdkit"
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("vhdkit-%d", os.Geteuid()))
}

func mountsDir() string { return filepath.Join(RuntimeDir(), "mounts") }

// MountsFolder checks the runtime folder and its mounts/ and returns the
// latter's path. create makes what is missing; otherwise a missing
// folder is an error satisfying errors.Is(err, fs.ErrNotExist).
func MountsFolder(create bool) (string, error) {
	check := privateDir
	if !create {
		check = existingPrivateDir
	}
	for _, d := range []string{RuntimeDir(), mountsDir()} {
		if err := check(d); err != nil {
			return "", err
		}
	}
	return mountsDir(), nil
}

// SocketDir is where `vhd serve` puts its default socket: the user's
// runtime folder ($XDG_RUNTIME_DIR, else /run/user/UID), which nobody
// else may write, else vhd's private folder (never the bare temporary
// folder, where anyone could take the name first).
func SocketDir() (string, error) {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return d, ownFolder(d)
	}
	if d := fmt.Sprintf("/run/user/%d", os.Geteuid()); ownFolder(d) == nil {
		return d, nil
	}
	d := RuntimeDir()
	return d, privateDir(d)
}

// ownFolder checks a user's runtime folder: theirs, and writable by
// nobody else (the XDG base directory rules ask for 0700).
func ownFolder(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("the runtime folder %s: %w (set XDG_RUNTIME_DIR to a folder of your own, mode 0700)", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return fmt.Errorf("the runtime folder %s is not a folder of yours that only you may write (owner uid %d, mode %#o): set XDG_RUNTIME_DIR to a folder of your own, mode 0700", dir, st.Uid, st.Mode&0o7777)
	}
	return nil
}

// existingPrivateDir checks a private folder that must already exist.
func existingPrivateDir(path string) error {
	if err := trustedParent(filepath.Dir(path)); err != nil {
		return err
	}
	return checkPrivateDir(path, false)
}

// privateDir makes sure path is a folder only this user can use,
// creating it (and checking its parent) if it is missing.
func privateDir(path string) error {
	if err := trustedParent(filepath.Dir(path)); err != nil {
		return err
	}
	made := false
	if err := os.Mkdir(path, 0o700); err == nil {
		made = true
	} else if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create the state folder %s: %w", path, err)
	}
	return checkPrivateDir(path, made)
}

// checkPrivateDir checks an existing folder through a descriptor opened
// without following a symlink. made: vhd has just created it, so a mode
// narrowed by the umask is set back to 0700.
func checkPrivateDir(path string, made bool) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("the state folder %s is a symlink or not a folder: vhd refuses it, as someone else may have put it there; remove it and run vhd again", path)
	}
	var st unix.Stat_t
	if err != nil {
		// Someone else's folder may not even open: say whose it is.
		if unix.Lstat(path, &st) == nil && int(st.Uid) != os.Geteuid() {
			return notOurs(path, st.Uid)
		}
		return fmt.Errorf("open the state folder %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat the state folder %s: %w", path, err)
	}
	if int(st.Uid) != os.Geteuid() {
		return notOurs(path, st.Uid)
	}
	if made && st.Mode&0o7777 != 0o700 {
		if err := unix.Fchmod(fd, 0o700); err != nil {
			return fmt.Errorf("chmod 700 the state folder %s: %w", path, err)
		}
		return nil
	}
	if perm := st.Mode & 0o7777; perm != 0o700 {
		return fmt.Errorf("the state folder %s has mode %#o, not 0700: others could read or change vhd's state there; run 'chmod 700 %s' if it is yours, or remove it", path, perm, path)
	}
	return nil
}

func notOurs(path string, uid uint32) error {
	return fmt.Errorf("the state folder %s belongs to uid %d, not to you (uid %d): someone else may have made it to read or steer your mounts; remove it (as root if need be) or set XDG_RUNTIME_DIR to a folder of your own", path, uid, os.Geteuid())
}

// trustedParent checks the folder a private folder or socket goes in:
// owned by this user or root, and writable by others only if sticky, so
// nobody else can move what vhd made and checked there.
func trustedParent(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("the runtime folder %s: %w (set XDG_RUNTIME_DIR or TMPDIR to a folder of your own)", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("the runtime folder %s is not a folder (set XDG_RUNTIME_DIR or TMPDIR to a folder of your own)", dir)
	}
	if owner := int(st.Uid); owner != os.Geteuid() && owner != 0 {
		return fmt.Errorf("the runtime folder %s belongs to uid %d: vhd keeps its state only under a folder of yours or root's (set XDG_RUNTIME_DIR or TMPDIR to a folder of your own)", dir, owner)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("the runtime folder %s is writable by others and not sticky: anyone could replace what vhd keeps there (set XDG_RUNTIME_DIR or TMPDIR to a folder of your own)", dir)
	}
	return nil
}

// writePrivateFile writes data as the file name in the checked folder
// dir: to a fresh file (O_EXCL|O_NOFOLLOW: never through a planted
// symlink, never into someone else's file), then renamed over name, so a
// reader sees the old file or the new one, whole. Not synced: state
// lives in a runtime folder (tmpfs, gone at a reboot, as the mounts
// are), so it has nothing to survive a crash for.
func writePrivateFile(dir, name string, data []byte) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+name+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// openPrivateLog opens (creating) a log in a checked folder for writing
// from its start, refusing a symlink or a file that is not this user's.
// It truncates only after checking, through the descriptor, what it
// opened.
func openPrivateLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, refusedFile(path, err)
	}
	if err := ownRegular(f, path); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openPrivateFile opens a state file or log for reading if it is a
// regular file owned by this user (not a symlink to one; O_NONBLOCK so
// a planted FIFO cannot block the open).
func openPrivateFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, refusedFile(path, err)
	}
	if err := ownRegular(f, path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readPrivateFile reads at most limit bytes of a file openPrivateFile
// accepts.
func readPrivateFile(path string, limit int64) ([]byte, error) {
	f, err := openPrivateFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// refusedFile explains an open that O_NOFOLLOW refused.
func refusedFile(path string, err error) error {
	if errors.Is(err, unix.ELOOP) {
		return fmt.Errorf("%s is a symlink: vhd neither follows nor trusts one in its state folder; remove it: %w", path, err)
	}
	return err
}

// ownRegular checks, through the open descriptor, that f is a regular
// file owned by this user: anything else in vhd's folders was put there
// by someone else.
func ownRegular(f *os.File, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s is not a regular file: vhd did not make it; remove it", path)
	}
	if euid := os.Geteuid(); int(st.Uid) != euid {
		return fmt.Errorf("%s belongs to uid %d, not to you (uid %d): vhd did not write it and ignores it; remove it", path, st.Uid, euid)
	}
	return nil
}
