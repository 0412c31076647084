package engine

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// QEMU locks the images it opens (qemu-img, qemu-io, qemu-nbd,
// qemu-system; block/file-posix.c) with shared open-file-description
// byte-range locks, not flock: one byte at 100+P for each permission P
// it holds, one at 200+P for each permission it does not let others
// hold. Seen in /proc/locks on this machine (QEMU 7.2): a writer locks
// 100, 101, 103, 201 and 203; a reader 100, 201 and 203. Before it takes
// a permission P it tests 200+P, and before it refuses to share P it
// tests 100+P; a lock there held by another open is a conflict. flock
// and these locks do not see each other, so vhd takes both: the flock
// among vhd's own opens (it names the holder), these so that QEMU and vhd
// never write one image at once, nor read it while the other writes.
const (
	qemuPermBase   = 100
	qemuSharedBase = 200
	// The permissions vhd takes and refuses to share, as QEMU's
	// writers and readers do.
	qemuConsistentRead = 0
	qemuWrite          = 1
	qemuResize         = 3
	// qemuLockEnd is one past the last byte QEMU locks (200+7).
	qemuLockEnd = 208
)

// qemuPerms are the permissions an open takes (a reader reads; a writer
// writes and resizes too) and those it does not share (a reader does
// not let another write: it wants a consistent view).
func qemuPerms(write bool) (held, unshared []int64) {
	held = []int64{qemuConsistentRead}
	if write {
		held = append(held, qemuWrite, qemuResize)
	}
	return held, []int64{qemuWrite, qemuResize}
}

// errQEMUConflict: another open (QEMU's, or vhd's through another file
// description) holds a byte-range lock this open's permissions conflict
// with.
var errQEMUConflict = errors.New("QEMU-style lock conflict")

// qemuLock takes QEMU's locks for a reader or writer on f, then tests for
// the locks of others that conflict with them, in that order (QEMU's
// order too): of two opens racing, at least the second sees the first.
// On a conflict it releases what it took and returns errQEMUConflict. A
// file system without OFD locks (ENOLCK, EINVAL) gets none: the flock
// still guards vhd's own opens.
func qemuLock(f *os.File, write bool) (release func(), err error) {
	fd := int(f.Fd())
	release = func() { setOFD(fd, unix.F_UNLCK, qemuPermBase, qemuLockEnd-qemuPermBase) }
	held, unshared := qemuPerms(write)
	for _, off := range lockOffsets(held, unshared) {
		if err := setOFD(fd, unix.F_RDLCK, off, 1); err != nil {
			release()
			if errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
				return func() {}, nil
			}
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
				return nil, errQEMUConflict // an exclusive lock there: not QEMU's, but a conflict all the same
			}
			return nil, err
		}
	}
	for _, off := range conflictOffsets(held, unshared) {
		if taken, err := lockedByOther(fd, off); err != nil || taken {
			release()
			if err != nil {
				return nil, err
			}
			return nil, errQEMUConflict
		}
	}
	return release, nil
}

// qemuShare turns a writer's QEMU locks into a reader's, in place: it
// gives up the write and resize permissions (a snapshot makes the layer a
// read-only parent). The unshare bytes stay: a parent must not change.
func qemuShare(f *os.File) {
	for _, p := range []int64{qemuWrite, qemuResize} {
		setOFD(int(f.Fd()), unix.F_UNLCK, qemuPermBase+p, 1)
	}
}

// lockOffsets are the bytes an open locks: 100+P for what it holds,
// 200+P for what it does not share.
func lockOffsets(held, unshared []int64) []int64 {
	var offs []int64
	for _, p := range held {
		offs = append(offs, qemuPermBase+p)
	}
	for _, p := range unshared {
		offs = append(offs, qemuSharedBase+p)
	}
	return offs
}

// conflictOffsets are the bytes whose lock by another open conflicts:
// 200+P for a permission held (someone refuses to share it), 100+P for
// one not shared (someone holds it).
func conflictOffsets(held, unshared []int64) []int64 {
	var offs []int64
	for _, p := range held {
		offs = append(offs, qemuSharedBase+p)
	}
	for _, p := range unshared {
		offs = append(offs, qemuPermBase+p)
	}
	return offs
}

func setOFD(fd int, typ int16, off, n int64) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: off, Len: n}
	return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
}

// lockedByOther reports whether another open file description holds a
// lock on byte off (this one's own locks never conflict with a test).
func lockedByOther(fd int, off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		if errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			return false, nil
		}
		return false, err
	}
	return lk.Type != unix.F_UNLCK, nil
}

// ofdHolders lists the processes other than this one whose open files
// hold OFD locks on the file with lock ID want ("fe:00:9978029"), and
// whether each holds the write permission's byte (101). /proc/locks
// gives OFD locks no pid (-1); /proc/PID/fdinfo lists the locks of each
// open file, so the holders are found there. Best effort, and only run
// when a conflict was seen or `vhd info` asks.
func ofdHolders(want string) []LockHolder {
	pids, _ := filepath.Glob("/proc/[0-9]*")
	self := os.Getpid()
	var out []LockHolder
	for _, dir := range pids {
		pid := atoiOr(filepath.Base(dir), 0)
		if pid == self || pid <= 0 {
			continue
		}
		if held, write := pidHoldsOFD(dir, want); held {
			out = append(out, LockHolder{PID: pid, Command: processName(pid), Write: write})
		}
	}
	return out
}

// pidHoldsOFD reads a process's fdinfo files for OFD lock lines on want.
func pidHoldsOFD(dir, want string) (held, write bool) {
	infos, _ := filepath.Glob(filepath.Join(dir, "fdinfo", "*"))
	for _, p := range infos {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), want) {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			// "lock:	1: OFDLCK ADVISORY  READ -1 fe:00:10117240 100 101"
			f := strings.Fields(line)
			if len(f) < 9 || f[0] != "lock:" || f[2] != "OFDLCK" || f[6] != want {
				continue
			}
			held = true
			start, end := atoiOr(f[7], -1), atoiOr(f[8], -1)
			if start <= qemuPermBase+qemuWrite && qemuPermBase+qemuWrite <= end {
				write = true
			}
		}
	}
	return held, write
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}
