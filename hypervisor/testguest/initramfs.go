package testguest

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	paths, err := modulePaths(k)
	if err != nil {
		return k, nil, fmt.Errorf("the modules of kernel %s: %w", k.Version, err)
	}
	var a archive
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"} {
		a.dir(d)
	}
	a.program("bin/busybox", bin)
	a.program("init", []byte(initScript))
	for _, m := range Modules {
		p, ok := paths[m]
		if !ok {
			return k, nil, fmt.Errorf("kernel %s has no module %s (built in? then drop it from testguest.Modules)", k.Version, m)
		}
		data, err := readModule(p)
		if err != nil {
			return k, nil, err
		}
		a.file("lib/modules/"+m+".ko", data)
	}
	a.file("modules.order", []byte(strings.Join(Modules, "\n")+"\n"))
	return k, a.bytes(), nil
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
	k, b, err := Base()
	if err != nil {
		return "", "", err
	}
	var a archive
	a.program("guest.sh", []byte(script))
	for name, data := range files {
		a.file(name, data)
	}
	initrd = filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(initrd, append(append([]byte(nil), b...), a.bytes()...), 0o644); err != nil {
		return "", "", err
	}
	return k.Image, initrd, nil
}
