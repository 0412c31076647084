package main

import (
	"vhdkit/engine"
	"vhdkit/service"
)

// inUseJSON is a process that has the image open (info's in_use), as
// Get-VHD's Attached says whether a disk is in use.
type inUseJSON struct {
	PID     int    `json:"pid"`
	Program string `json:"program"`
	Writing bool   `json:"writing"`
	// By names it in words: the mount (its mount point), the vhd serve
	// (its sockets), the vhd run, or the program.
	By string `json:"by"`
	// Holder says the same for scripts: kind (mount, serve, run,
	// process), mount_point, sockets, control.
	service.Holder
}

// inUse lists the processes other than this one that hold the image's
// OS lock (engine.LockHolders): the same lock every vhd process and
// qemu-img take.
func inUse(path string) []inUseJSON {
	list := []inUseJSON{}
	for _, h := range engine.LockHolders(path) {
		d := service.DescribeHolder(h.PID, h.Command)
		list = append(list, inUseJSON{PID: h.PID, Program: h.Command, Writing: h.Write, By: d.String(), Holder: d})
	}
	return list
}

// inUseRow is the text of info's "in use" line.
func inUseRow(list []inUseJSON) string {
	if len(list) == 0 {
		return "no"
	}
	s := ""
	for i, u := range list {
		if i > 0 {
			s += "; "
		}
		how := "reading"
		if u.Writing {
			how = "writing"
		}
		s += u.By + ", " + how
	}
	return s
}
