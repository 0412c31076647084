#!/usr/bin/env bash
# Side-by-side NBD benchmark: `vhd serve`, `qemu-nbd -f vpc` and
# `nbdkit file` on the same data (1 GiB of random data in a 2 GiB dynamic
# VHD; a raw copy of it for nbdkit), over unix sockets, driven by
# fio --ioengine=nbd and nbdcopy. Prints IOPS / throughput per server and
# the ratios vhd/qemu-nbd and vhd/nbdkit.
#
# Usage: scripts/bench-nbd.sh [WORKDIR]
#   RUNTIME=10   seconds per fio run
#   DATA_MIB=1024 DISK_MIB=2048
# Numbers vary +-30% between runs on shared machines: compare the ratios
# of one run, not numbers across runs.
set -euo pipefail
cd "$(dirname "$0")/.."

runtime="${RUNTIME:-10}"
data_mib="${DATA_MIB:-1024}"
disk_mib="${DISK_MIB:-2048}"
work="${1:-$(mktemp -d -t vhdkit-bench-nbd.XXXXXX)}"
mkdir -p "$work"
for t in fio nbdcopy qemu-nbd qemu-img nbdkit python3; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done

go build -o "$work/vhd" ./tools/vhd
vhd="$work/vhd"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# start NAME SOCKET CMD...: runs a server and waits for its socket.
start() {
  local sock="$2"
  shift 2
  rm -f "$sock"
  "$@" >/dev/null 2>"$work/server.log" &
  pids+=($!)
  for _ in $(seq 100); do
    [ -S "$sock" ] && return 0
    sleep 0.05
  done
  echo "server did not start: $*" >&2
  cat "$work/server.log" >&2
  exit 1
}
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

# A dynamic VHD whose size field qemu also trusts (force_size: creator qem2).
new_vhd() { rm -f "$1"; qemu-img create -q -f vpc -o subformat=dynamic,force_size=on "$1" "${disk_mib}M"; }

echo "== data: ${data_mib} MiB of random data in a ${disk_mib} MiB dynamic VHD ($work) =="
head -c $((data_mib << 20)) /dev/urandom >"$work/data.raw"
cp "$work/data.raw" "$work/disk.raw"
truncate -s "${disk_mib}M" "$work/disk.raw"
new_vhd "$work/disk.vhd"
start fill "$work/fill.sock" "$vhd" serve --socket "$work/fill.sock" "$work/disk.vhd"
nbdcopy --flush "$work/data.raw" "nbd+unix:///?socket=$work/fill.sock"
stop_all
qemu-img compare -q -f vpc -F raw "$work/disk.vhd" "$work/disk.raw"

# fio_run NAME URI ARGS...: prints "IOPS MiB/s" of the job.
fio_run() {
  local uri="$1"
  shift
  fio --name=b --ioengine=nbd --uri="$uri" --runtime="$runtime" --time_based \
    --output-format=json "$@" 2>/dev/null |
    python3 -c '
import json, sys
out = sys.stdin.read()  # fio --ioengine=nbd prints a line before the JSON
j = json.loads(out[out.index("{"):])["jobs"][0]
s = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
print("%.0f %.0f" % (s["iops"], s["bw_bytes"] / 2**20))'
}

declare -A res
servers=(vhd qemu nbdkit)
uri_vhd="nbd+unix:///?socket=$work/vhd.sock"
uri_qemu="nbd+unix:///?socket=$work/qemu.sock"
uri_nbdkit="nbd+unix:///?socket=$work/nbdkit.sock"

start_readers() {
  start vhd "$work/vhd.sock" "$vhd" serve --read-only --socket "$work/vhd.sock" "$work/disk.vhd"
  start qemu "$work/qemu.sock" qemu-nbd -r -f vpc -t -e 8 --socket="$work/qemu.sock" "$work/disk.vhd"
  start nbdkit "$work/nbdkit.sock" nbdkit -f -r -U "$work/nbdkit.sock" file "$work/disk.raw"
}

readsize="${data_mib}M"
workloads=(
  "randread-4k-qd1|--rw=randread --bs=4k --iodepth=1 --size=$readsize"
  "randread-4k-qd32|--rw=randread --bs=4k --iodepth=32 --size=$readsize"
  "seqread-1m-qd8|--rw=read --bs=1M --iodepth=8 --size=$readsize"
)
start_readers
for w in "${workloads[@]}"; do
  name="${w%%|*}"
  args="${w#*|}"
  for s in "${servers[@]}"; do
    u="uri_$s"
    # shellcheck disable=SC2086
    res["$name/$s"]="$(fio_run "${!u}" $args)"
    echo "$name $s: ${res[$name/$s]}"
  done
done
for s in "${servers[@]}"; do
  u="uri_$s"
  # Read everything the export holds (holes are skipped by all three).
  t0=$(date +%s.%N)
  nbdcopy "${!u}" null:
  t1=$(date +%s.%N)
  res["nbdcopy-null/$s"]="- $(python3 -c "print('%.0f' % ($data_mib / ($t1 - $t0)))")"
  echo "nbdcopy-null $s: ${res[nbdcopy-null/$s]}"
done
stop_all

# Writes go into fresh images: a dynamic VHD for vhd and qemu-nbd, a
# sparse raw file for nbdkit.
write_workloads=(
  "seqwrite-1m-qd8|--rw=write --bs=1M --iodepth=8 --size=${data_mib}M"
  "randwrite-4k-qd32-fresh|--rw=randwrite --bs=4k --iodepth=32 --size=${disk_mib}M"
  "randwrite-4k-qd32-fresh-fsync32|--rw=randwrite --bs=4k --iodepth=32 --fsync=32 --size=${disk_mib}M"
)
for w in "${write_workloads[@]}"; do
  name="${w%%|*}"
  args="${w#*|}"
  new_vhd "$work/w-vhd.vhd"
  new_vhd "$work/w-qemu.vhd"
  rm -f "$work/w.raw"
  truncate -s "${disk_mib}M" "$work/w.raw"
  start vhd "$work/vhd.sock" "$vhd" serve --socket "$work/vhd.sock" "$work/w-vhd.vhd"
  start qemu "$work/qemu.sock" qemu-nbd -f vpc -t -e 8 --socket="$work/qemu.sock" "$work/w-qemu.vhd"
  start nbdkit "$work/nbdkit.sock" nbdkit -f -U "$work/nbdkit.sock" file "$work/w.raw"
  for s in "${servers[@]}"; do
    u="uri_$s"
    # shellcheck disable=SC2086
    res["$name/$s"]="$(fio_run "${!u}" $args)"
    echo "$name $s: ${res[$name/$s]}"
  done
  stop_all
done

echo
echo "== results ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, runtime ${runtime}s) =="
printf '%-34s %16s %16s %16s %9s %9s\n' workload "vhd serve" "qemu-nbd vpc" "nbdkit raw" "vhd/qemu" "vhd/nbdkit"
for w in "${workloads[@]}" "nbdcopy-null|" "${write_workloads[@]}"; do
  name="${w%%|*}"
  python3 - "$name" "${res[$name/vhd]}" "${res[$name/qemu]}" "${res[$name/nbdkit]}" <<'EOF'
import sys
name, *vals = sys.argv[1:]
def metric(v):
    iops, mib = v.split()
    return (float(mib), "%s MiB/s" % mib) if iops == "-" or name.startswith(("seq", "nbdcopy")) else (float(iops), "%s IOPS" % iops)
m = [metric(v) for v in vals]
ratio = lambda a, b: "%.2fx" % (a / b) if b else "-"
print("%-34s %16s %16s %16s %9s %9s" % (name, m[0][1], m[1][1], m[2][1], ratio(m[0][0], m[1][0]), ratio(m[0][0], m[2][0])))
EOF
done
