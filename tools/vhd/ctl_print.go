package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/dustin/go-humanize"

	"vhdkit/nbdserve"
	"vhdkit/service"
)

// How vhd ctl status reads without --json:
//
//	server pid 1234, control socket /run/vhdkit/serve-1234.ctl
//	export disk (top.vhd): read-write, busy: job 3
//	  nbd+unix:///disk?socket=/run/user/0/vhd-serve-1234.sock
//	  fuse:/mnt/disk
//	  layers, top first:
//	    /srv/top.vhd
//	    /srv/base.vhd
//	  nbd: 2 clients (5 in all), 1200 requests (0 failed), read 12 MiB, written 3 MiB
//	  latency: p50 0.12 ms, p90 0.4 ms, p99 2.1 ms, max 30 ms
//	job 3: merge of /srv/top.vhd (export disk): running, 42% (12 MiB of 30 MiB)
//	backup disk-backup of export disk: point /srv/top.vhd (UUID ...), crash-consistent, full, begun ...

func printStatus(w io.Writer, st *service.Status) {
	fmt.Fprintf(w, "server pid %d, control socket %s\n", st.PID, st.Control)
	if len(st.Exports) == 0 {
		fmt.Fprintln(w, "no exports ('vhd ctl PATH add' adds one)")
	}
	for i := range st.Exports {
		printExport(w, &st.Exports[i])
	}
	for i := range st.Jobs {
		fmt.Fprintf(w, "job %d: %s\n", st.Jobs[i].ID, jobLine(&st.Jobs[i]))
	}
	for i := range st.Backups {
		fmt.Fprintln(w, backupLine(&st.Backups[i]))
	}
}

func printExport(w io.Writer, ex *service.ExportStatus) {
	fmt.Fprintf(w, "export %s (%s): %s\n", ex.Name, ex.Description, strings.Join(exportTraits(ex), ", "))
	for _, u := range ex.URIs {
		fmt.Fprintf(w, "  %s\n", u)
	}
	if ex.FUSE != "" {
		fmt.Fprintf(w, "  fuse:%s\n", ex.FUSE)
	}
	printLayers(w, ex.Layers)
	n := ex.NBD
	fmt.Fprintf(w, "  nbd: %d clients (%d in all), %d requests (%d failed), read %s, written %s\n",
		n.ClientsConnected, n.ConnectionsTotal, n.Requests, n.Errors, ibytes(int64(n.BytesRead)), ibytes(int64(n.BytesWritten)))
	if n.Requests > 0 {
		fmt.Fprintf(w, "  latency: %s\n", latencyLine(n.Latency))
	}
}

// exportTraits are the words that describe an export's mode and state.
func exportTraits(ex *service.ExportStatus) []string {
	t := []string{"read-write"}
	if ex.ReadOnly {
		t[0] = "read-only"
	}
	if ex.Undo {
		t = append(t, "on an undo disk")
	}
	if ex.ViewOf != "" {
		t = append(t, "a frozen layer of export "+ex.ViewOf)
	}
	if ex.Job != 0 {
		t = append(t, fmt.Sprintf("busy: job %d", ex.Job))
	}
	return t
}

func printLayers(w io.Writer, layers []string) {
	if len(layers) == 0 {
		return
	}
	fmt.Fprintln(w, "  layers, top first:")
	for _, l := range layers {
		fmt.Fprintf(w, "    %s\n", l)
	}
}

func latencyLine(l nbdserve.LatencyStats) string {
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s", millis(l.P50Micros), millis(l.P90Micros), millis(l.P99Micros), millis(l.MaxMicros))
}

func millis(us float64) string {
	return fmt.Sprintf("%.3g ms", us/1000)
}

func ibytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

// imageUnder is the image an undo disk lies on: the layer under the top.
func imageUnder(ex *service.ExportStatus) string {
	if len(ex.Layers) > 1 {
		return ex.Layers[1]
	}
	return ex.Description
}
