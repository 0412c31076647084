package engine

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockHolder is a process that holds an OS lock on an image: it has the
// image open (Write: for writing).
type LockHolder struct {
	PID     int
	Command string // its program name (/proc/PID/comm)
	Write   bool
}

// LockHolders lists the processes other than this one that hold a lock
// on the file at path, writers first: who has the image open (`vhd
// info`'s "in use"). flock holders come from /proc/locks; QEMU's
// byte-range (OFD) locks name no pid there, so their holders are looked
// up in /proc/PID/fdinfo. Best effort: nil when it cannot tell.
func LockHolders(path string) []LockHolder {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return nil
	}
	defer locks.Close()
	var list []LockHolder
	sawOFD := false
	self := os.Getpid()
	sc := bufio.NewScanner(locks)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 4242 fe:00:9978029 0 EOF"; waiters
		// ("1: -> FLOCK ...") hold nothing.
		f := strings.Fields(sc.Text())
		if len(f) >= 6 && f[1] == "OFDLCK" && f[5] == want {
			sawOFD = true // QEMU's (or vhd's own): the pid is in fdinfo
		}
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != want {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil || pid <= 0 || pid == self || slices.ContainsFunc(list, func(h LockHolder) bool { return h.PID == pid }) {
			continue
		}
		list = append(list, LockHolder{PID: pid, Command: processName(pid), Write: f[3] == "WRITE"})
	}
	if sawOFD {
		for _, h := range ofdHolders(want) {
			if !slices.ContainsFunc(list, func(x LockHolder) bool { return x.PID == h.PID }) {
				list = append(list, h)
			}
		}
	}
	slices.SortStableFunc(list, func(a, b LockHolder) int {
		if a.Write == b.Write {
			return 0
		}
		if a.Write {
			return -1
		}
		return 1
	})
	return list
}
