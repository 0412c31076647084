package testguest

import (
	"bytes"
	"os/exec"
	"testing"
)

// TestBaseArchive builds the base archive and lists it with cpio(1)
// when installed, else checks the trailer and the files by their names.
func TestBaseArchive(t *testing.T) {
	k, b, err := Base()
	if err != nil {
		t.Fatal(err)
	}
	if k.Version == "" || len(b)%4 != 0 {
		t.Fatalf("kernel %+v, archive of %d bytes", k, len(b))
	}
	for _, name := range []string{"bin/busybox", "init", "lib/modules/virtio_blk.ko", "modules.order", "TRAILER!!!"} {
		if !bytes.Contains(b, []byte(name+"\x00")) {
			t.Errorf("the archive has no %s", name)
		}
	}
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-t")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("lib/modules/evdev.ko")) {
			t.Fatalf("cpio -t: %v\n%s", err, out)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		less bool
	}{
		{"6.1.0-9-amd64", "6.1.0-10-amd64", true},
		{"6.1.0-57-amd64", "6.12.1-1-amd64", true},
		{"6.12.1-1-amd64", "6.1.0-57-amd64", false},
	} {
		if got := compareVersions(c.a, c.b) < 0; got != c.less {
			t.Errorf("%s < %s: got %v", c.a, c.b, got)
		}
	}
}
