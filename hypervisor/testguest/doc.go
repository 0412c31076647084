// Package testguest builds what tests boot under QEMU: the installed
// Linux kernel (found by what is installed, never a fixed version) and a
// busybox initramfs with the virtio modules, whose /init mounts devtmpfs,
// loads the modules, watches the ACPI power button, prints a boot banner
// and runs a guest script of the test's.
//
// The base archive (busybox, modules, /init) is built once per test
// binary; each guest's initramfs is that archive followed by a second
// one holding its script (the kernel unpacks concatenated archives in
// order), so a new guest costs a copy, not a build.
//
// scripts/setup.sh installs what it needs: linux-image-amd64,
// busybox-static and qemu-system-x86.
package testguest
