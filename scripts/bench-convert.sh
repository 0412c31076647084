#!/usr/bin/env bash
# Side-by-side conversion benchmark: vhd convert against qemu-img convert
# on the same data, a 2 GiB disk of 1 GiB random data followed by a
# 1 GiB hole, with the page cache warm:
#
#   raw -> dynamic VHD   vhd convert --to dynamic   | qemu-img convert -O vpc -o subformat=dynamic
#   dynamic VHD -> raw   vhd convert --to raw       | qemu-img convert -f vpc -O raw
#
# Each conversion is timed twice over: the command alone, and to the
# output being durable (the command, then `sync -d` of the output), so a
# tool that skips its flush gains nothing. On a slow disk the durable
# time is the disk's; DIR=/dev/shm/... (tmpfs) shows the tools' own work.
# Every output is checked against the source data. Prints each run, then
# the median per tool and the ratio vhd/qemu-img (below 1: vhd is
# faster).
#
# Memory: in a virtual machine that hands freed pages back to its host
# (virtio-balloon free page reporting, as here), the first touch of such
# a page costs a fault in the host: a command that writes 1 GiB into
# memory nobody used for a few seconds took 2-3 s of system time here,
# and 0.5 s into memory just freed. So every timed command starts right
# after 1.5 GiB was written and freed (warm_memory), whichever tool ran
# before it.
#
#   scripts/bench-convert.sh            # 5 runs each
#   RUNS=3 DIR=/var/tmp/bench scripts/bench-convert.sh
#   QEMU_ONLY=1 scripts/bench-convert.sh  # only qemu-img (exits 1)
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${RUNS:-5}"
dir="${DIR:-$(mktemp -d /tmp/bench-convert.XXXXXX)}"
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT

command -v qemu-img >/dev/null || { echo "qemu-img not found: run scripts/setup.sh" >&2; exit 1; }
have_vhd=1
if [ ! -d tools/vhd ]; then
  have_vhd=0
  echo "bench-convert: ./tools/vhd is not in this tree, so there is no vhd binary to compare." >&2
  if [ "${QEMU_ONLY:-0}" != 1 ]; then
    echo "bench-convert: build it on a branch that has the CLI (or run with QEMU_ONLY=1 to time qemu-img alone)." >&2
    exit 1
  fi
else
  go build -o "$dir/vhd" ./tools/vhd
fi
qemu-img --version | head -1

# The source: 1 GiB of random data, then a 1 GiB hole.
src="$dir/src.raw"
head -c 1G /dev/urandom > "$src"
truncate -s 2G "$src"
cat "$src" > /dev/null
# The VHD source is made once, by qemu-img with force_size so its size is
# exactly 2 GiB for every reader, and rewritten by vhd when there is one
# (so both tools read a VHD laid out as vhd lays it out).
srcvhd="$dir/src.vhd"
qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$src" "$srcvhd"
if [ "$have_vhd" = 1 ]; then
  rm -f "$srcvhd"
  "$dir/vhd" convert --to dynamic "$src" "$srcvhd"
fi
qemu-img compare -q -f vpc -F raw "$srcvhd" "$src"
cat "$srcvhd" > /dev/null

now() { date +%s%N; }

# warm_memory writes and deletes a scratch file larger than any output,
# so the pages the next command writes into were touched a moment ago.
warm_memory() {
  head -c 1536M /dev/zero > "$dir/warm"
  rm -f "$dir/warm"
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
declare -A cmdtimes durtimes

# timeit KEY OUT CMD...: runs CMD, then makes OUT durable; records the
# command's own time and the time to a durable output, in seconds.
timeit() {
  local key="$1" out="$2"
  shift 2
  rm -f "$out"
  warm_memory
  sync -f "$dir" # start every run with nothing of the last one to write back
  local t0 t1 t2
  t0=$(now)
  "$@" >/dev/null
  t1=$(now)
  sync -d "$out"
  t2=$(now)
  local c d
  c=$(secs "$t0" "$t1")
  d=$(secs "$t0" "$t2")
  cmdtimes[$key]="${cmdtimes[$key]:-} $c"
  durtimes[$key]="${durtimes[$key]:-} $d"
  echo "  $key run $run: command ${c}s, durable ${d}s"
}

check_raw() { cmp -s "$1" "$src" || { echo "bench-convert: $1 differs from the source" >&2; exit 1; }; }
check_vhd() { qemu-img compare -q -f vpc -F raw "$1" "$src" || { echo "bench-convert: $1 differs from the source" >&2; exit 1; }; }

vhd_to_dynamic() {
  [ "$have_vhd" = 1 ] || return 0
  timeit "raw->dynamic vhd" "$dir/o.vhd" "$dir/vhd" convert --to dynamic "$src" "$dir/o.vhd"
  check_vhd "$dir/o.vhd"
}
qemu_to_dynamic() {
  timeit "raw->dynamic qemu-img" "$dir/o.vhd" qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$src" "$dir/o.vhd"
  check_vhd "$dir/o.vhd"
}
vhd_to_raw() {
  [ "$have_vhd" = 1 ] || return 0
  timeit "dynamic->raw vhd" "$dir/o.raw" "$dir/vhd" convert --to raw "$srcvhd" "$dir/o.raw"
  check_raw "$dir/o.raw"
}
qemu_to_raw() {
  timeit "dynamic->raw qemu-img" "$dir/o.raw" qemu-img convert -f vpc -O raw "$srcvhd" "$dir/o.raw"
  check_raw "$dir/o.raw"
}

# The tools take turns going first, so neither always runs in the wake of
# the other (a shared disk still finishing the last write, say).
for run in $(seq 1 "$runs"); do
  echo "run $run"
  if [ $((run % 2)) = 1 ]; then
    vhd_to_dynamic; qemu_to_dynamic; rm -f "$dir/o.vhd"
    vhd_to_raw; qemu_to_raw
  else
    qemu_to_dynamic; vhd_to_dynamic; rm -f "$dir/o.vhd"
    qemu_to_raw; vhd_to_raw
  fi
  rm -f "$dir/o.vhd" "$dir/o.raw"
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo
echo "medians over $runs runs, seconds (command alone / to a durable output):"
for dirn in "raw->dynamic" "dynamic->raw"; do
  qc=$(echo "${cmdtimes[$dirn qemu-img]}" | median)
  qd=$(echo "${durtimes[$dirn qemu-img]}" | median)
  if [ "$have_vhd" = 1 ]; then
    vc=$(echo "${cmdtimes[$dirn vhd]}" | median)
    vd=$(echo "${durtimes[$dirn vhd]}" | median)
    awk -v d="$dirn" -v vc="$vc" -v vd="$vd" -v qc="$qc" -v qd="$qd" 'BEGIN {
      printf "%-14s vhd %7.3f / %7.3f   qemu-img %7.3f / %7.3f   vhd/qemu-img %.2f / %.2f\n", d, vc, vd, qc, qd, vc / qc, vd / qd }'
  else
    awk -v d="$dirn" -v qc="$qc" -v qd="$qd" 'BEGIN { printf "%-14s vhd n/a   qemu-img %7.3f / %7.3f\n", d, qc, qd }'
  fi
done
[ "$have_vhd" = 1 ] || exit 1
