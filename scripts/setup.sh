#!/usr/bin/env bash
# Installs the Debian packages vhdkit's tests and benchmarks use: the real
# peers the tests run against (qemu-img, qemu-io, vhdiinfo, fio, ...).
# Idempotent; needs root (or sudo). Skips apt entirely when every tool is
# already there.
set -euo pipefail

packages=(qemu-utils libvhdi-utils fio e2fsprogs libnbd-bin python3-libnbd nbdkit)
tools=(qemu-img qemu-io vhdiinfo fio mkfs.ext4 nbdinfo nbdsh nbdkit)

missing=0
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || missing=1
done
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
