package testguest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Modules are the kernel modules the guests need, in load order: the
// virtio transport, block driver and serial ports (the guest agent's
// channel; Debian builds them as modules), then the ACPI power button
// and the event device it reports through.
var Modules = []string{"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk", "virtio_console", "button", "evdev"}

// Ext4Modules are the modules an ext4 filesystem needs, in load order
// (crc32c_generic is the checksum ext4 and jbd2 ask the crypto API for).
var Ext4Modules = []string{"crc16", "mbcache", "jbd2", "crc32c_generic", "ext4"}

// Kernel is an installed kernel: its image and its modules' folder.
type Kernel struct {
	Version string
	Image   string // /boot/vmlinuz-VERSION
	Modules string // /lib/modules/VERSION
}

// FindKernel finds the newest installed kernel that has both an image in
// /boot and its modules in /lib/modules.
func FindKernel() (Kernel, error) {
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	var found []Kernel
	for _, img := range images {
		v := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		if st, err := os.Stat(filepath.Join("/lib/modules", v, "modules.dep")); err == nil && st.Mode().IsRegular() {
			found = append(found, Kernel{Version: v, Image: img, Modules: filepath.Join("/lib/modules", v)})
		}
	}
	if len(found) == 0 {
		return Kernel{}, errors.New("no installed kernel with its modules (/boot/vmlinuz-* and /lib/modules/*/modules.dep): scripts/setup.sh installs linux-image-amd64")
	}
	slices.SortFunc(found, func(a, b Kernel) int { return compareVersions(a.Version, b.Version) })
	return found[len(found)-1], nil
}

// compareVersions orders kernel versions by their numeric parts
// (6.1.0-9 before 6.1.0-10).
func compareVersions(a, b string) int {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	}
	pa, pb := split(a), split(b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		switch {
		case ea == nil && eb == nil && na != nb:
			return na - nb
		case (ea != nil || eb != nil) && pa[i] != pb[i]:
			return strings.Compare(pa[i], pb[i])
		}
	}
	return len(pa) - len(pb)
}

// modulePaths maps module names to their files, from modules.dep (names
// with '-' and '_' are the same module).
func modulePaths(k Kernel) (map[string]string, error) {
	f, err := os.Open(filepath.Join(k.Modules, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	paths := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		file, _, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		name := filepath.Base(file)
		name = name[:strings.Index(name, ".ko")]
		paths[strings.ReplaceAll(name, "-", "_")] = filepath.Join(k.Modules, file)
	}
	return paths, sc.Err()
}

// readModule reads a module file, decompressing .ko.gz, .ko.xz and
// .ko.zst (Debian compresses modules in later releases).
func readModule(path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(path, ".ko.xz"):
		return decompress(path, "busybox", "xzcat") // busybox-static is installed anyway
	case strings.HasSuffix(path, ".ko.zst"):
		return decompress(path, "zstd", "-dc")
	}
	return nil, fmt.Errorf("%s: a module compressed in a way this helper does not know", path)
}

func decompress(path string, argv ...string) ([]byte, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command(argv[0], append(argv[1:], path)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("decompress %s with %s: %w: %s", path, argv[0], err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}
