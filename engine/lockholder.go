package engine

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockedError is the error of an open refused by another open's lock
// (errors.Is(err, ErrLocked)). PID and Command name the process holding
// the lock when /proc/locks tells (0 and "" otherwise), so a caller can
// say which mount or server has the image.
type LockedError struct {
	Path    string
	Write   bool // the refused open wanted to write
	PID     int
	Command string // the holder's program name (/proc/PID/comm)
}

func (e *LockedError) Error() string {
	who := "another process (or open)"
	if e.PID > 0 {
		who = fmt.Sprintf("process %d (%s)", e.PID, e.Command)
	}
	if e.Write {
		return fmt.Sprintf("%s: %v: %s has it open; close it there first", e.Path, ErrLocked, who)
	}
	return fmt.Sprintf("%s: %v: %s has it open for writing; close it there first", e.Path, ErrLocked, who)
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// lockHolder finds the process holding a flock on f in /proc/locks,
// which lists each lock with its owner's pid and the file's device and
// inode ("1: FLOCK  ADVISORY  WRITE 4242 fe:00:9978029 0 EOF"). Best
// effort: 0 when it cannot tell.
func lockHolder(f *os.File) (pid int, command string) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, ""
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return 0, ""
	}
	defer locks.Close()
	self := os.Getpid()
	sc := bufio.NewScanner(locks)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// Waiters are listed as "N: -> FLOCK ...": not holders.
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != want {
			continue
		}
		if p, err := strconv.Atoi(fields[4]); err == nil && p > 0 && p != self {
			return p, processName(p)
		}
	}
	return 0, ""
}

// processName is a process's program name, or "?" if it is gone.
func processName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// ofdHolder is the process whose QEMU-style lock conflicts with an open
// of f (for writing: any holder; for reading: a writer), from
// /proc/PID/fdinfo. Best effort: 0 when it cannot tell.
func ofdHolder(f *os.File, write bool) (pid int, command string) {
	id := fileLockID(f)
	if id == "" {
		return 0, ""
	}
	for _, h := range ofdHolders(id) {
		if write || h.Write {
			return h.PID, h.Command
		}
	}
	return 0, ""
}

// fileLockID is how /proc/locks names f's file: "MAJ:MIN:INODE".
func fileLockID(f *os.File) string {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
}
