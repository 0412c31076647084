package engine

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// specialFiles makes a FIFO, a socket, a folder and a symlink to a FIFO,
// and names /dev/null, each with the word its error must use. The
// cleanup opens the FIFO for writing, which releases an open that
// blocked on it (the old code's), so no goroutine or process stays stuck.
func specialFiles(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.vhd")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releaseFIFO(fifo) })
	sock := filepath.Join(dir, "sock.vhd")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	link := filepath.Join(dir, "link.vhd")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	return map[string]string{fifo: "named pipe (FIFO)", link: "named pipe (FIFO)", sock: "socket", "/dev/null": "character device", dir: "folder"}
}

// releaseFIFO opens path for writing without blocking and closes it, so
// a reader blocked opening it returns.
func releaseFIFO(path string) {
	if fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
		unix.Close(fd)
	}
}

// returnsSoon runs open and fails the test if it has not returned
// within a few seconds (an open of a FIFO blocks until a writer comes).
func returnsSoon(t *testing.T, what string, open func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- open() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Errorf("%s blocked", what)
		return nil
	}
}

func TestOpenCheckedRefusesSpecialFiles(t *testing.T) {
	closeIt := func(f interface{ Close() error }, err error) error {
		if err == nil {
			f.Close()
			return errors.New("opened")
		}
		return err
	}
	for path, kind := range specialFiles(t) {
		for name, open := range map[string]func() error{
			"OpenChecked": func() error { return closeIt(OpenChecked(path, os.O_RDONLY, true)) },
			"Open":        func() error { return closeIt(Open(path, Options{ReadOnly: true})) },
			"Open rw":     func() error { return closeIt(Open(path, Options{})) },
			"OpenRaw":     func() error { return closeIt(OpenRaw(path, true)) },
			"OpenAny":     func() error { return closeIt(OpenAny(path, Options{ReadOnly: true})) },
			"CheckPath":   func() error { _, err := CheckPath(path, CheckOptions{}); return err },
			"Repair":      func() error { _, err := Repair(path, RepairOptions{}); return err },
			"IsVHD":       func() error { _, err := IsVHD(path); return err },
		} {
			err := returnsSoon(t, name+" "+path, open)
			if err == nil {
				continue
			}
			if !errors.Is(err, ErrNotFile) || !strings.Contains(err.Error(), kind) {
				t.Errorf("%s %s: %v, want ErrNotFile naming a %s", name, path, err, kind)
			}
		}
	}
}

func TestOpenCheckedKinds(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(reg, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.raw")
	if err := os.Symlink(reg, link); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []int{os.O_RDONLY, os.O_RDWR} {
		f, err := OpenChecked(link, flag, false)
		if err != nil {
			t.Fatalf("regular file through a symlink: %v", err)
		}
		// Back in blocking mode for ordinary I/O.
		if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
			t.Errorf("flags %#x, %v: still O_NONBLOCK", fl, err)
		}
		f.Close()
	}
	if _, err := OpenChecked(link, os.O_RDONLY|unix.O_NOFOLLOW, false); !errors.Is(err, ErrNotFile) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("symlink with O_NOFOLLOW: %v", err)
	}
	if _, err := OpenChecked(filepath.Join(dir, "missing"), os.O_RDONLY, true); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	// A block device where devices are allowed, refused where not.
	if dev := anyBlockDevice(); dev != "" {
		if f, err := OpenChecked(dev, os.O_RDONLY, true); err != nil {
			t.Errorf("block device %s: %v", dev, err)
		} else {
			f.Close()
		}
		if _, err := OpenChecked(dev, os.O_RDONLY, false); !errors.Is(err, ErrNotFile) || !strings.Contains(err.Error(), "block device, not a regular file") {
			t.Errorf("block device %s, devices not allowed: %v", dev, err)
		}
	}
}

// anyBlockDevice returns a block device this process may open, or "".
func anyBlockDevice() string {
	ents, _ := os.ReadDir("/dev")
	for _, e := range ents {
		p := "/dev/" + e.Name()
		if st, err := os.Stat(p); err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0 {
			if f, err := os.Open(p); err == nil {
				f.Close()
				return p
			}
		}
	}
	return ""
}
