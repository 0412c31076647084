package hypervisor

import (
	"bytes"
	"crypto/md5"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/chains"
	"vhdkit/engine"
)

// TestGuestWritesDisks: a guest writes a pattern to a dynamic VHD, to
// the top of a 3-deep chain and to a fixed VHD, fsyncs and powers off;
// the run ends with status nil, the host reads each pattern back through
// the engine, and every image checks clean. The guest also prints the
// checksum of what it read of the chain before writing, which must be
// what the host reads through the chain.
func TestGuestWritesDisks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 64 << 20
	pat := pattern(1, 1<<20)
	dyn := filepath.Join(dir, "dynamic.vhd")
	fixed := filepath.Join(dir, "fixed.vhd")
	makeImage(t, dyn, engine.TypeDynamic, size, nil, 0)
	makeImage(t, fixed, engine.TypeFixed, size, nil, 0)
	top := makeChain(t, dir, size)
	before := readDisk(t, top, 0, 4<<20)

	script := "dd if=/dev/vdb bs=1M count=4 2>/dev/null | md5sum | sed 's/^/chain-md5 /'\n" +
		writeScript("vda", 3<<20) + writeScript("vdb", 1<<20) + writeScript("vdc", 5<<20)
	cfg, con := guestConfig(t, script, map[string][]byte{"pattern": pat},
		Disk{Path: dyn}, Disk{Path: top}, Disk{Path: fixed})
	if err := runGuest(t, cfg); err != nil {
		t.Fatalf("run: %v\nconsole:\n%s", err, con)
	}
	out := con.String()
	for _, dev := range []string{"vda", "vdb", "vdc"} {
		if !strings.Contains(out, "wrote "+dev) {
			t.Fatalf("the guest did not write %s:\n%s", dev, out)
		}
	}
	if want := fmt.Sprintf("chain-md5 %x", md5.Sum(before)); !strings.Contains(out, want) {
		t.Errorf("the guest read another chain: want %q in its console:\n%s", want, out)
	}
	for _, c := range []struct {
		path string
		off  int64
	}{{dyn, 3 << 20}, {top, 1 << 20}, {fixed, 5 << 20}} {
		if got := readDisk(t, c.path, c.off, len(pat)); !bytes.Equal(got, pat) {
			t.Errorf("%s does not hold the guest's pattern at %d", c.path, c.off)
		}
	}
	// What the guest did not write is as it was: the chain's first MiB.
	if got := readDisk(t, top, 0, 1<<20); !bytes.Equal(got, before[:1<<20]) {
		t.Error("the chain's first MiB changed")
	}
	checkClean(t, dyn, fixed, top, filepath.Join(dir, "mid.vhd"), filepath.Join(dir, "base.vhd"))
	unlocked(t, dyn)
}

// makeChain makes base.vhd <- mid.vhd <- top.vhd, each layer holding
// data of its own (some overlapping), and returns the top.
func makeChain(t *testing.T, dir string, size int64) string {
	t.Helper()
	base := filepath.Join(dir, "base.vhd")
	makeImage(t, base, engine.TypeDynamic, size, pattern(10, 3<<20), 0)
	prev := base
	for i, name := range []string{"mid.vhd", "top.vhd"} {
		p := filepath.Join(dir, name)
		c, err := chains.CreateChild(prev, p, chains.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteAt(pattern(uint64(11+i), 512<<10), int64(i+1)<<20-4096); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		prev = p
	}
	return prev
}
