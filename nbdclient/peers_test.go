package nbdclient

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The client against the servers users run: nbdkit (its memory and file
// plugins) and qemu-nbd, all from Debian (scripts/setup.sh installs them;
// a missing one fails the test). Each serves a sparse raw file holding
// testWrites; the client must read it byte for byte, and its
// base:allocation must say where the data is.

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/setup.sh", tool)
		}
	}
}

// rawFile writes a sparse raw disk of testSize holding testWrites.
func rawFile(t *testing.T) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	model := make([]byte, testSize)
	for _, w := range testWrites {
		b := pattern(w.off, w.n)
		if _, err := f.WriteAt(b, w.off); err != nil {
			t.Fatal(err)
		}
		copy(model[w.off:], b)
	}
	if err := f.Truncate(testSize); err != nil {
		t.Fatal(err)
	}
	return path, model
}

// startPeer runs a server in the foreground until the test ends and
// waits for its socket.
func startPeer(t *testing.T, sock string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not make its socket: %s", name, out.String())
		}
	}
}

// readAll reads the whole export in 2 MiB pieces.
func readAll(t *testing.T, uri string, size int64) ([]byte, *Conn) {
	t.Helper()
	c := dialT(t, uri, "base:allocation")
	if c.Info().Size != size {
		t.Fatalf("size %d, want %d", c.Info().Size, size)
	}
	got := make([]byte, size)
	for off := int64(0); off < size; off += 2 << 20 {
		if err := c.ReadAt(context.Background(), got[off:off+2<<20], off); err != nil {
			t.Fatal(err)
		}
	}
	return got, c
}

// dataRanges turns base:allocation descriptors into [off, end) ranges
// that are neither holes nor zeros.
func dataRanges(ext []Extent) [][2]int64 {
	var out [][2]int64
	var off int64
	for _, e := range ext {
		if e.Flags&StateZero == 0 {
			if k := len(out); k > 0 && out[k-1][1] == off {
				out[k-1][1] += e.Len
			} else {
				out = append(out, [2]int64{off, off + e.Len})
			}
		}
		off += e.Len
	}
	return out
}

// statusAll walks the whole export's base:allocation.
func statusAll(t *testing.T, c *Conn) []Extent {
	t.Helper()
	var all []Extent
	for off := int64(0); off < c.Info().Size; {
		st, err := c.BlockStatus(context.Background(), off, uint32(min(c.Info().Size-off, MaxStatusLength)))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range st["base:allocation"] {
			all = append(all, e)
			off += e.Len
		}
	}
	return all
}

// checkPeer reads the export and its allocation map and compares them
// with what the file holds: every byte of data must be inside a data
// range (a server may report data more coarsely than it was written).
func checkPeer(t *testing.T, uri string, model []byte) {
	t.Helper()
	got, c := readAll(t, uri, testSize)
	if !bytes.Equal(got, model) {
		t.Fatal("reads differ from the file")
	}
	if !c.Info().Structured {
		t.Fatal("no structured replies")
	}
	data := dataRanges(statusAll(t, c))
	for _, w := range testWrites {
		in := false
		for _, r := range data {
			in = in || (r[0] <= w.off && w.off+w.n <= r[1])
		}
		if !in {
			t.Errorf("written range %d+%d not reported as data: %v", w.off, w.n, data)
		}
	}
	var total int64
	for _, r := range data {
		total += r[1] - r[0]
	}
	if total > 8<<20 {
		t.Errorf("%d bytes reported as data for 2.2 MiB written: %v", total, data)
	}
}

func TestNbdkitFile(t *testing.T) {
	need(t, "nbdkit")
	path, model := rawFile(t)
	sock := filepath.Join(t.TempDir(), "nbdkit.sock")
	startPeer(t, sock, "nbdkit", "-f", "-U", sock, "file", "file="+path)
	checkPeer(t, "nbd+unix:///?socket="+sock, model)
}

func TestNbdkitMemory(t *testing.T) {
	need(t, "nbdkit", "nbdcopy")
	path, model := rawFile(t)
	sock := filepath.Join(t.TempDir(), "nbdkit.sock")
	startPeer(t, sock, "nbdkit", "-f", "-U", sock, "memory", "size=64M")
	uri := "nbd+unix:///?socket=" + sock
	if out, err := exec.Command("nbdcopy", path, uri).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy into nbdkit memory: %v\n%s", err, out)
	}
	checkPeer(t, uri, model)
}

func TestQemuNbd(t *testing.T) {
	need(t, "qemu-nbd")
	path, model := rawFile(t)
	sock := filepath.Join(t.TempDir(), "qemu.sock")
	startPeer(t, sock, "qemu-nbd", "-f", "raw", "-k", sock, "-x", "disk", "--shared=4", "-r", path)
	checkPeer(t, "nbd+unix:///disk?socket="+sock, model)
}
