package service

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"vhdkit/engine"
	"vhdkit/internal/shq"
)

// HolderHint names the vhd mount or server holding a locked image, from
// the pid the engine found in /proc/locks: a mount by its mount point
// (its state file), a server by its socket.
func HolderHint(le *engine.LockedError) string {
	if le.PID <= 0 {
		return ""
	}
	if st := mountByPID(le.PID); st != nil && st.Server == "" {
		return fmt.Sprintf("the mount at %s (pid %d) has it: unmount it first ('vhd umount %s')", st.Mountpoint, le.PID, shq.Quote(st.Mountpoint))
	}
	args := processArgs(le.PID)
	if len(args) >= 2 && args[1] == "merge" {
		return fmt.Sprintf("a 'vhd merge' (pid %d) is running on it: let it finish; if it is killed, 'vhd merge' again finishes its work", le.PID)
	}
	if len(args) < 2 || args[1] != "serve" {
		return ""
	}
	// Its control socket is not one to connect an NBD client to, but
	// a way to make it let go of the image without stopping.
	socks := unixSockets(le.PID)
	ctl, _ := ControlOfPID(le.PID)
	hasCtl := slices.Contains(socks, ctl)
	socks = slices.DeleteFunc(socks, func(s string) bool { return s == ctl })
	where := ""
	if len(socks) > 0 {
		where = ", socket " + strings.Join(socks, ", ")
	}
	hint := fmt.Sprintf("'vhd serve' (pid %d%s) has it: stop that server first (Ctrl-C where it runs, or kill %d)", le.PID, where, le.PID)
	if hasCtl {
		hint += fmt.Sprintf(", or have it stop serving the image: 'vhd ctl %s remove EXPORT' ('vhd ctl %s status' names the export)", ctl, ctl)
	}
	return hint
}

// mountByPID is the state of the live mount whose server is pid.
func mountByPID(pid int) *MountState {
	list, _ := ListMounts()
	for _, st := range list {
		if st.Alive && st.PID == pid {
			return st
		}
	}
	return nil
}

// processArgs is a process's command line.
func processArgs(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// unixSockets lists the paths of the unix sockets a process has open
// (its listeners), matching the inodes of its socket descriptors with
// /proc/net/unix. Best effort: empty when it cannot tell.
func unixSockets(pid int) []string {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return nil
	}
	cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	var paths []string
	// Num RefCount Protocol Flags Type St Inode Path ("@..." abstract)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && inodes[f[6]] && !strings.HasPrefix(f[7], "@") {
			if !filepath.IsAbs(f[7]) && cwd != "" {
				f[7] = filepath.Join(cwd, f[7]) // bound relative to the server's folder
			}
			if !slices.Contains(paths, f[7]) {
				paths = append(paths, f[7]) // accepted connections repeat it
			}
		}
	}
	return paths
}
