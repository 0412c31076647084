package service

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Finding a server's control socket from what a user has at hand: the
// socket itself, the pid of vhd serve, or its NBD socket (the one in the
// URI it printed).

// FindControl turns vhd ctl's first argument into a control socket's
// path: a pid becomes that server's control socket; anything else is
// taken as the path of one (ControlOfNBDSocket handles an NBD socket
// given instead, once a request shows it is one).
func FindControl(arg string) (string, error) {
	pid, err := strconv.Atoi(arg)
	if err != nil || pid <= 0 {
		return arg, nil
	}
	return ControlOfPID(pid)
}

// ControlOfPID is the control socket of the vhd serve (or vhd run) with
// that pid: the --control it was given, else the default path.
func ControlOfPID(pid int) (string, error) {
	args := processArgs(pid)
	if len(args) < 2 || (args[1] != "serve" && args[1] != "run") {
		return "", fmt.Errorf("process %d is not a vhd serve or vhd run (or not yours): give the control socket's path (both print it as control:PATH)", pid)
	}
	if p := flagValue(args[2:], "control"); p != "" {
		if !filepath.IsAbs(p) {
			cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
			if err != nil {
				return "", fmt.Errorf("process %d was given 'vhd serve --control %s', relative to a folder vhd cannot see: give the socket's full path: %w", pid, p, err)
			}
			p = filepath.Join(cwd, p)
		}
		return p, nil
	}
	if args[1] == "run" {
		return runControlSocketIn(runtimeDirOf(pid), pid), nil
	}
	return controlSocketIn(runtimeDirOf(pid), pid), nil
}

// runtimeDirOf is RuntimeDir as the process pid (of this user) sees it,
// from its environment: the server may have been started with another
// XDG_RUNTIME_DIR or TMPDIR than the client's.
func runtimeDirOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return RuntimeDir()
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	switch {
	case env["XDG_RUNTIME_DIR"] != "":
		return filepath.Join(env["XDG_RUNTIME_DIR"], "vhdkit")
	case os.Geteuid() == 0:
		return "/run/vhdkit"
	case env["TMPDIR"] != "":
		return filepath.Join(env["TMPDIR"], fmt.Sprintf("vhdkit-%d", os.Geteuid()))
	}
	return filepath.Join("/tmp", fmt.Sprintf("vhdkit-%d", os.Geteuid()))
}

// flagValue is the value of flag name in a command line (--name V or
// --name=V), or "" without it; "--" ends the flags.
func flagValue(args []string, name string) string {
	flag := "--" + name
	for i, a := range args {
		switch {
		case a == "--":
			return ""
		case a == flag && i+1 < len(args):
			return args[i+1]
		case strings.HasPrefix(a, flag+"="):
			return a[len(flag)+1:]
		}
	}
	return ""
}

// SpeaksNBD reports whether the socket at path is an NBD server's: it
// greets a new connection at once with NBDMAGIC, which a control socket
// never does.
func SpeaksNBD(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	var magic [8]byte
	n, _ := c.Read(magic[:])
	return bytes.Equal(magic[:n], []byte("NBDMAGIC"))
}

// ControlOfNBDSocket is the control socket of the vhd serve listening on
// the NBD socket at path.
func ControlOfNBDSocket(path string) (string, error) {
	pid, err := listenerPID(path)
	if err != nil {
		return "", err
	}
	return ControlOfPID(pid)
}

// listenerPID finds the process listening on the unix socket at path:
// its inode in /proc/net/unix, then the process holding that inode.
func listenerPID(path string) (int, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, err
	}
	inode := listeningInode(abs)
	if inode == "" {
		return 0, fmt.Errorf("nothing listens on %s: give the control socket's path or the server's pid", path)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	want := "socket:[" + inode + "]"
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); l == want {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("the process listening on %s is not yours, or is gone: give the control socket's path", path)
}

// listeningInode is the inode of the listening unix socket bound at
// path, from /proc/net/unix, or "".
func listeningInode(path string) string {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return ""
	}
	// Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 is
	// __SO_ACCEPTCON, a listening socket.
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && f[7] == path && f[3] == "00010000" {
			return f[6]
		}
	}
	return ""
}
