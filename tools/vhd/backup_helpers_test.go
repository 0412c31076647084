package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"vhdkit/backup"
	"vhdkit/service"
)

// What the vhd backup tests share: a writer that appends
// sequence-numbered 4 KiB records to the disk, one at a time (each
// acknowledged before the next is sent), so any consistent point holds
// records 1..N and nothing after; and ways to read a backup back.

const recordSize = 4096

// recordScript writes record i (its number, big-endian, repeated) at
// (i-1)*4096 from START+1 on, at queue depth one, flushing every 256 and
// pausing 25 ms every 64 (at most about 2500 records a second, so it
// still writes when a test's later backups are cut), until the file STOP
// exists or LIMIT records; then flushes, reads every record it wrote
// back and prints "OK LAST". Any failed request raises: nbdsh exits 1.
const recordScript = `
import os, struct, sys, time
stop, start, limit = os.environ["STOP"], int(os.environ.get("START", "0")), int(os.environ["LIMIT"])
seq = start
def rec(i):
    return struct.pack(">Q", i) * 512
while not os.path.exists(stop) and seq < limit:
    seq += 1
    h.pwrite(rec(seq), (seq - 1) * 4096)
    if seq % 256 == 0:
        h.flush()
    if seq % 64 == 0:
        time.sleep(0.025)
h.flush()
for i in range(1, seq + 1):
    if h.pread(4096, (i - 1) * 4096) != rec(i):
        print("MISSING record", i, flush=True)
        sys.exit(1)
print("OK", seq, flush=True)
`

// startRecords starts the record writer on uri, after record start.
func startRecords(t *testing.T, uri string, start, limit int) *nbdClient {
	t.Helper()
	c := &nbdClient{stop: filepath.Join(t.TempDir(), "stop")}
	c.cmd = clientCmd("nbdsh", "-u", uri, "-c", recordScript)
	c.cmd.Env = append(c.cmd.Env, "STOP="+c.stop, "START="+strconv.Itoa(start), "LIMIT="+strconv.Itoa(limit))
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	})
	return c
}

// record is what record i holds.
func record(i int) []byte {
	return bytes.Repeat(binary.BigEndian.AppendUint64(nil, uint64(i)), recordSize/8)
}

// recordsIn checks that disk holds records 1..N for some N and nothing
// after (zeros), and returns N.
func recordsIn(t *testing.T, disk []byte, what string) int {
	t.Helper()
	return recordsOf(t, disk, record, what)
}

// recordsOf is recordsIn for records whose contents rec gives.
func recordsOf(t *testing.T, disk []byte, rec func(int) []byte, what string) int {
	t.Helper()
	n := 0
	for ; (n+1)*recordSize <= len(disk) && bytes.Equal(disk[n*recordSize:(n+1)*recordSize], rec(n+1)); n++ {
	}
	rest := disk[n*recordSize:]
	if i := bytes.IndexFunc(rest, func(r rune) bool { return r != 0 }); i >= 0 {
		at := n*recordSize + i
		t.Fatalf("%s: records 1..%d, then something else at byte %d (record %d): a gap or a record after the point", what, n, at, at/recordSize+1)
	}
	return n
}

// readBackup reads a backup (with its chain) as vhd convert does.
func readBackup(t *testing.T, path string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.raw")
	vhdOK(t, "convert", "--to", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(out)
	return b
}

// begin runs vhd backup begin --json.
func begin(t *testing.T, ctl, export string, args ...string) service.Backup {
	t.Helper()
	var b service.Backup
	vhdJSON(t, &b, append([]string{"backup", "begin", "--json", ctl, export}, args...)...)
	return b
}

// pull runs vhd backup pull --json.
func pull(t *testing.T, uri, dest string, args ...string) backup.PullResult {
	t.Helper()
	var r backup.PullResult
	vhdJSON(t, &r, append([]string{"backup", "pull", "--json", uri, dest}, args...)...)
	checkOK(t, dest)
	return r
}

// changedMap reads nbdinfo --map=vhdkit:changed: the changed ranges.
func changedMap(t *testing.T, uri string) [][2]int64 {
	t.Helper()
	out, err := clientCmd("nbdinfo", "--map=vhdkit:changed", "--json", uri).Output()
	if err != nil {
		t.Fatalf("nbdinfo --map=vhdkit:changed: %v", err)
	}
	var m []struct {
		Offset, Length int64
		Type           int
	}
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("nbdinfo --map --json: %v\n%s", err, out)
	}
	var ch [][2]int64
	for _, e := range m {
		if e.Type&1 != 0 {
			ch = append(ch, [2]int64{e.Offset, e.Offset + e.Length})
		}
	}
	return ch
}

// treeLeaves lists the images of dir that have no children (vhd tree).
func treeLeaves(t *testing.T, dir string) []string {
	t.Helper()
	type node struct {
		Path     string
		Children []node
	}
	var roots []node
	vhdJSON(t, &roots, "tree", "--json", dir)
	var leaves []string
	var walk func(n node)
	walk = func(n node) {
		if len(n.Children) == 0 {
			leaves = append(leaves, n.Path)
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	return leaves
}
