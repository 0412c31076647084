package testguest

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// BootBanner is the line /init prints once the guest's userland runs;
// a restored guest does not print it again.
const BootBanner = "testguest: booted"

// Append is the kernel command line for these guests: the console on
// the first serial port, and a panic reboots at once (tests add
// -no-reboot, so QEMU exits instead of looping).
const Append = "console=ttyS0 panic=-1 quiet"

// init is /init: mount what busybox needs, load the modules, power off
// when the ACPI power button is pressed (unless /guest.sh removes
// /power-button), run the guest script, power off.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko || echo "testguest: insmod $m failed"; done
for ev in /sys/class/input/event*; do
  if [ "$(cat $ev/device/name 2>/dev/null)" = "Power Button" ]; then
    (dd if=/dev/${ev#/sys/class/} of=/dev/null bs=24 count=1 2>/dev/null
     if [ -e /power-button ]; then echo "testguest: power button: powering off"; sync; poweroff -f; fi) &
  fi
done
touch /power-button
echo "` + BootBanner + `"
sh /guest.sh
echo "testguest: guest.sh ended with status $?"
sync
poweroff -f
`

var base struct {
	once sync.Once
	k    Kernel
	cpio []byte
	err  error
}

// Base returns the kernel and the base archive, built once.
func Base() (Kernel, []byte, error) {
	base.once.Do(func() { base.k, base.cpio, base.err = buildBase() })
	return base.k, base.cpio, base.err
}

func buildBase() (Kernel, []byte, error) {
	k, err := FindKernel()
	if err != nil {
		return k, nil, err
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return k, nil, fmt.Errorf("busybox is not installed: scripts/setup.sh installs busybox-static: %w", err)
	}
	bin, err := os.ReadFile(bb)
	if err != nil {
		return k, nil, err
	}
	if err := static(bb); err != nil {
		return k, nil, err
	}
	var a archive
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"} {
		a.dir(d)
	}
	a.program("bin/busybox", bin)
	a.program("init", []byte(initScript))
	if err := addModules(&a, k, Modules, Modules); err != nil {
		return k, nil, err
	}
	return k, a.bytes(), nil
}

// addModules adds the modules named, and modules.order listing order:
// /init loads those, in that order (a second archive's modules.order
// replaces the base's, so it lists the base's modules too).
func addModules(a *archive, k Kernel, names, order []string) error {
	paths, err := modulePaths(k)
	if err != nil {
		return fmt.Errorf("the modules of kernel %s: %w", k.Version, err)
	}
	for _, m := range names {
		p, ok := paths[m]
		if !ok {
			return fmt.Errorf("kernel %s has no module %s (built in? then drop it from the list)", k.Version, m)
		}
		data, err := readModule(p)
		if err != nil {
			return err
		}
		a.file("lib/modules/"+m+".ko", data)
	}
	a.file("modules.order", []byte(strings.Join(order, "\n")+"\n"))
	return nil
}

// static makes sure a program needs no shared libraries: the initramfs
// has none.
func static(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is linked dynamically and cannot run in the guests' initramfs: scripts/setup.sh installs busybox-static", path)
		}
	}
	return nil
}

// Build writes an initramfs whose /guest.sh is script, with files
// (name to contents, at the root) beside it, into dir and returns the
// kernel to boot with it and the initramfs's path.
func Build(dir, script string, files map[string][]byte) (kernel, initrd string, err error) {
	return BuildGuest(dir, Guest{Script: script, Files: files})
}

// Guest is what a test guest holds besides the base archive.
type Guest struct {
	// Script is /guest.sh; Files are put at the root beside it.
	Script string
	Files  map[string][]byte
	// Programs are host programs (paths) copied into /bin, each with
	// the shared libraries it needs (and their dynamic loader) at the
	// paths it looks for them.
	Programs []string
	// Modules are kernel modules loaded after the base's, in order
	// (Ext4Modules...).
	Modules []string
}

// BuildGuest is Build for a guest with programs and modules of its own.
func BuildGuest(dir string, g Guest) (kernel, initrd string, err error) {
	k, b, err := Base()
	if err != nil {
		return "", "", err
	}
	var a archive
	a.program("guest.sh", []byte(g.Script))
	for name, data := range g.Files {
		a.file(name, data)
	}
	if err := addPrograms(&a, g.Programs); err != nil {
		return "", "", err
	}
	if len(g.Modules) > 0 {
		if err := addModules(&a, k, g.Modules, slices.Concat(Modules, g.Modules)); err != nil {
			return "", "", err
		}
	}
	initrd = filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(initrd, append(append([]byte(nil), b...), a.bytes()...), 0o644); err != nil {
		return "", "", err
	}
	return k.Image, initrd, nil
}
