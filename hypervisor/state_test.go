package hypervisor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadManifest: a manifest that is missing, too large, not JSON, of
// another format or naming relative layers is refused as ErrBadState
// with the reason; a good one reads back.
func TestReadManifest(t *testing.T) {
	good := `{"format": "vhdkit-saved-guest/1", "accel": "tcg", "qemu_version": "7.2.22",
	  "machine": {"type": "pc-i440fx-7.2", "memory_bytes": 268435456, "cpus": 1},
	  "disks": [{"image": "d.vhd", "layer": "/x/d.vhd", "uuid": "u"}]}`
	cases := []struct {
		name, text, want string
	}{
		{"good", good, ""},
		{"format", strings.Replace(good, "guest/1", "guest/9", 1), "format"},
		{"relative", strings.Replace(good, `"/x/d.vhd"`, `"d.vhd"`, 1), "absolute"},
		{"accel", strings.Replace(good, `"tcg"`, `"xen"`, 1), "accelerator"},
		{"memory", strings.Replace(good, "268435456", "1", 1), "out of range"},
		{"json", "{", "unexpected end"},
		{"large", strings.Repeat(" ", maxManifest+1), "larger than"},
	}
	for _, c := range cases {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, manifestFile), []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := ReadManifest(dir)
		if c.want == "" {
			if err != nil || m.Machine.Type != "pc-i440fx-7.2" || len(m.Disks) != 1 {
				t.Errorf("%s: %+v %v", c.name, m, err)
			}
			continue
		}
		if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrBadState saying %q", c.name, err, c.want)
		}
	}
	if _, err := ReadManifest(t.TempDir()); !errors.Is(err, ErrBadState) {
		t.Errorf("no manifest: %v", err)
	}
}
