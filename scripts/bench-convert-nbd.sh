#!/usr/bin/env bash
# vhd convert from an NBD export, against qemu-img convert and nbdcopy
# reading the same export. `vhd serve --read-only` serves a DISK_MIB
# dynamic VHD holding DATA_MIB of random data (in 1 MiB pieces spread
# over the disk, the rest never written) over a unix socket; each round
# every tool copies the export into a new raw file in WORKDIR, the tools
# taking turns at going first, and the copy is checked against the
# image (vhd compare). vhd also converts it into a dynamic VHD. Before
# each copy 1.5 GiB is written and freed (warm_memory).
# qemu-img and nbdcopy skip what base:allocation calls holes, as vhd
# does. Each time includes a sync of the output (vhd syncs its own
# before it returns; the others do not). Prints each time and the
# medians over ROUNDS, then vhd's median as a ratio of each other tool's
# (below 1: vhd is faster).
#
# Usage: scripts/bench-convert-nbd.sh [WORKDIR]
#   ROUNDS=5 DISK_MIB=2048 DATA_MIB=1024
# Times vary on a shared machine: compare within one run.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-5}"
disk_mib="${DISK_MIB:-2048}"
data_mib="${DATA_MIB:-1024}"
work="${1:-$(mktemp -d -t vhdkit-bench-convert-nbd.XXXXXX)}"
mkdir -p "$work"
for t in nbdcopy qemu-img; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done

go build -o "$work/vhd" ./tools/vhd
vhd="$work/vhd"
spid=""
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

img="$work/disk.vhd"
rm -f "$img"
"$vhd" create --size "${disk_mib}M" "$img" >/dev/null
# DATA_MIB pieces of 1 MiB of random data, spread evenly over the disk.
/usr/bin/python3 - "$img" "$disk_mib" "$data_mib" <<'EOF'
import os, subprocess, sys
img, disk, data = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
step = max(1, disk // data)
raw = img + ".raw"  # staged as a sparse raw file, then converted
with open(raw, "wb") as f:
    f.truncate(disk << 20)
    for i in range(data):
        f.seek((i * step) << 20)
        f.write(os.urandom(1 << 20))
os.remove(img)
subprocess.run([os.path.dirname(img) + "/vhd", "convert", "--to", "dynamic", raw, img], check=True, stdout=subprocess.DEVNULL)
os.remove(raw)
EOF

sock="$work/nbd.sock"
"$vhd" serve --read-only --socket "$sock" "$img=disk" >"$work/serve.out" 2>"$work/serve.err" &
spid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
uri="nbd+unix:///disk?socket=$sock"

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
declare -A times
# warm_memory writes and deletes a file larger than any output, so the
# pages the next tool writes into were touched a moment ago: this VM
# gives freed memory back to its host, and the first touch of such a
# page costs a host fault (docs/BENCHMARKS.md, "Conversion").
warm_memory() {
  head -c 1536M /dev/zero >"$work/warm"
  rm -f "$work/warm"
}
run() { # name command...
  local name=$1; shift
  local out="$work/out-$name"
  rm -f "$out"
  warm_memory
  sync
  local t0; t0=$(now)
  "$@" "$out" >/dev/null 2>&1 || { echo "$name failed: $*" >&2; exit 1; }
  sync "$out" # durable, as vhd's output is when it returns
  local took; took=$(since "$t0")
  if [ "$name" != vhd-dynamic ]; then
    "$vhd" compare -U "$img" "$out" >/dev/null || { echo "$name: the copy differs from the image" >&2; exit 1; }
  fi
  rm -f "$out"
  times[$name]="${times[$name]:-} $took"
  printf '%-12s %6s s\n' "$name" "$took"
}

tools=(vhd-raw qemu-img nbdcopy vhd-dynamic)
for r in $(seq "$rounds"); do
  echo "round $r"
  n=${#tools[@]}
  for i in $(seq 0 $((n - 1))); do
    t=${tools[$(((i + r) % n))]}
    case $t in
      vhd-raw) run vhd-raw "$vhd" convert --no-progress --to raw "$uri" ;;
      vhd-dynamic) run vhd-dynamic "$vhd" convert --no-progress --to dynamic "$uri" ;;
      qemu-img) run qemu-img qemu-img convert -f raw -O raw "$uri" ;;
      nbdcopy) run nbdcopy nbdcopy "$uri" ;;
    esac
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "medians over $rounds rounds (${data_mib} MiB of data in a ${disk_mib} MiB disk):"
for t in "${tools[@]}"; do
  m=$(echo "${times[$t]}" | median)
  eval "med_${t//-/_}=$m"
  printf '  %-12s %6s s\n' "$t" "$m"
done
python3 -c "import sys; v,q,c=map(float,sys.argv[1:]); print(f'vhd convert --to raw / qemu-img convert: {v/q:.2f}x the time; / nbdcopy: {v/c:.2f}x')" \
  "$med_vhd_raw" "$med_qemu_img" "$med_nbdcopy"
