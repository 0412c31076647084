#!/usr/bin/env bash
# Installs the Debian packages vhdkit's tests and benchmarks use: the real
# peers the tests run against (qemu-img, qemu-io, vhdiinfo, fio, ...).
# Idempotent; needs root (or sudo). Skips apt entirely when every tool is
# already there.
set -euo pipefail

# vhd mount (vhdfs) tests and scripts/bench-fuse.sh: fuse3 (fusermount3),
# ntfs-3g (mkfs.ntfs, ntfsfix), fdisk (sfdisk), the mkfs of each
# filesystem --fs mounts or reports, and qemu-storage-daemon's FUSE export
# (qemu-system-common) to compare against. vhd serve (nbdserve) tests:
# nbdinfo, nbdcopy, nbdsh (python3-libnbd), nbdkit, fio, qemu-img/qemu-io.
# vhd run (hypervisor) tests: QEMU (qemu-system-x86), a kernel to boot
# (linux-image-amd64: found by what is installed, any version) and a
# static busybox for the guests' initramfs (busybox-static), and Debian's
# qemu-guest-agent, which the agent tests run on the host (with every
# command that could change it disabled) and copy, with its libraries,
# into a guest's initramfs. The CLI's completion and man page tests run
# the real shells and renderers: bash, zsh, fish (in tmux) and groff/man.
# scripts/bench-backup.sh MODE=tls makes its certificates with openssl.
# vhd resize --to-minimum's GPT tests check the moved table with gdisk's
# sgdisk as well as sfdisk.
packages=(qemu-utils libvhdi-utils fio e2fsprogs libnbd-bin python3-libnbd nbdkit
  fuse3 ntfs-3g fdisk gdisk xfsprogs btrfs-progs dosfstools mtools qemu-system-common
  qemu-system-x86 linux-image-amd64 busybox-static qemu-guest-agent
  zsh fish tmux groff-base man-db openssl)
tools=(qemu-img qemu-io vhdiinfo fio mkfs.ext4 nbdinfo nbdsh nbdkit
  fusermount3 mkfs.ntfs ntfsfix sfdisk sgdisk mkfs.xfs mkfs.btrfs mkfs.vfat mcopy qemu-storage-daemon vhdimount
  qemu-system-x86_64 busybox qemu-ga zsh fish tmux groff man openssl)

missing=0
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || missing=1
done
# The kernel has no command to look for: its image and its modules.
compgen -G '/boot/vmlinuz-*' >/dev/null && compgen -G '/lib/modules/*/modules.dep' >/dev/null || missing=1
if [ "$missing" = 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${packages[@]}"
