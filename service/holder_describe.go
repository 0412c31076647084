package service

import (
	"fmt"
	"slices"
	"strings"
)

// Holder is what holds an image open, as `vhd info` shows it. Kind is
// "mount" (a vhd mount, or the FUSE side of none: Mountpoint set),
// "serve" (Sockets, Control), "run" (a guest's disk), or "process"
// (anything else: QEMU, flock, a program of the user's).
type Holder struct {
	Kind       string   `json:"kind"`
	Mountpoint string   `json:"mount_point,omitempty"`
	Sockets    []string `json:"sockets,omitempty"`
	Control    string   `json:"control,omitempty"`

	pid     int
	command string
}

// DescribeHolder finds what the process pid (program command) holding an
// image is: a vhd mount by its mount point, a vhd serve by its sockets
// and control socket, a vhd run as the guest runner, anything else by
// its program name.
func DescribeHolder(pid int, command string) Holder {
	h := Holder{Kind: "process", pid: pid, command: command}
	if st := mountByPID(pid); st != nil {
		h.Kind, h.Mountpoint = "mount", st.Mountpoint
		return h
	}
	args := processArgs(pid)
	if len(args) < 2 {
		return h
	}
	switch args[1] {
	case "serve":
		h.Kind = "serve"
		h.Sockets = unixSockets(pid)
		ctl, _ := ControlOfPID(pid)
		if slices.Contains(h.Sockets, ctl) {
			h.Control = ctl
			h.Sockets = slices.DeleteFunc(h.Sockets, func(s string) bool { return s == ctl })
		}
	case "run", "mount":
		h.Kind = args[1]
	}
	return h
}

// String says it in words, as info's "in use" line does.
func (h Holder) String() string {
	switch h.Kind {
	case "mount":
		if h.Mountpoint == "" {
			return fmt.Sprintf("'vhd mount' (pid %d)", h.pid)
		}
		return fmt.Sprintf("the mount at %s (pid %d)", h.Mountpoint, h.pid)
	case "run":
		return fmt.Sprintf("'vhd run' (pid %d), a guest using it as a disk", h.pid)
	case "serve":
		d := fmt.Sprintf("'vhd serve' (pid %d", h.pid)
		if len(h.Sockets) > 0 {
			d += ", socket " + strings.Join(h.Sockets, ", ")
		}
		if h.Control != "" {
			d += ", control " + h.Control
		}
		return d + ")"
	}
	return fmt.Sprintf("process %d (%s)", h.pid, h.command)
}
