package service

import (
	"fmt"
	"slices"
	"strings"
)

// DescribeHolder names the process pid (program command) that holds an
// image open, as `vhd info` shows it: a vhd mount by its mount point, a
// vhd serve by its sockets and control socket, a vhd run as the guest
// runner, anything else by its program name.
func DescribeHolder(pid int, command string) string {
	if st := mountByPID(pid); st != nil {
		return fmt.Sprintf("the mount at %s (pid %d)", st.Mountpoint, pid)
	}
	args := processArgs(pid)
	if len(args) >= 2 {
		switch args[1] {
		case "serve":
			return describeServer(pid)
		case "run":
			return fmt.Sprintf("'vhd run' (pid %d), a guest using it as a disk", pid)
		case "mount":
			return fmt.Sprintf("'vhd mount' (pid %d)", pid)
		}
	}
	return fmt.Sprintf("process %d (%s)", pid, command)
}

// describeServer names a vhd serve by its NBD sockets and control socket
// ('vhd ctl CTL status' names its exports).
func describeServer(pid int) string {
	socks := unixSockets(pid)
	ctl, _ := ControlOfPID(pid)
	hasCtl := slices.Contains(socks, ctl)
	socks = slices.DeleteFunc(socks, func(s string) bool { return s == ctl })
	d := fmt.Sprintf("'vhd serve' (pid %d", pid)
	if len(socks) > 0 {
		d += ", socket " + strings.Join(socks, ", ")
	}
	if hasCtl {
		d += ", control " + ctl
	}
	return d + ")"
}
