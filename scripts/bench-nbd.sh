#!/usr/bin/env bash
# Side-by-side NBD benchmark: `vhd serve`, `qemu-nbd -f vpc` and
# `nbdkit file` on the same data (1 GiB of random data in a 2 GiB dynamic
# VHD; a raw copy of it for nbdkit), over unix sockets, driven by
# fio --ioengine=nbd and nbdcopy. Every workload runs ROUNDS times with
# the servers in rotating order; the summary shows medians, the ratios
# vhd/qemu-nbd and vhd/nbdkit, and each server's CPU time per request
# (from /proc, so it does not depend on how busy the machine is).
#
# Usage: scripts/bench-nbd.sh [WORKDIR]
#   RUNTIME=10 seconds per fio run   ROUNDS=3
#   DATA_MIB=1024 DISK_MIB=2048
# Numbers vary +-30% between runs on shared machines: compare the ratios
# of one run, not numbers across runs.
set -euo pipefail
cd "$(dirname "$0")/.."

runtime="${RUNTIME:-10}"
rounds="${ROUNDS:-3}"
data_mib="${DATA_MIB:-1024}"
disk_mib="${DISK_MIB:-2048}"
work="${1:-$(mktemp -d -t vhdkit-bench-nbd.XXXXXX)}"
mkdir -p "$work"
for t in fio nbdcopy qemu-nbd qemu-img nbdkit python3; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done

go build -o "$work/vhd" ./tools/vhd
vhd="$work/vhd"
results="$work/results.tsv"
: >"$results"
declare -A spid
cleanup() {
  for p in "${spid[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# start NAME SOCKET CMD...: runs a server and waits for its socket.
start() {
  local name="$1" sock="$2"
  shift 2
  rm -f "$sock"
  "$@" >/dev/null 2>"$work/$name.log" &
  spid[$name]=$!
  for _ in $(seq 100); do
    [ -S "$sock" ] && return 0
    sleep 0.05
  done
  echo "server did not start: $*" >&2
  cat "$work/$name.log" >&2
  exit 1
}
stop_all() {
  for p in "${spid[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${spid[@]}"; do wait "$p" 2>/dev/null || true; done
  spid=()
}

# cpu_ticks PID: user+system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)

# A dynamic VHD whose size field qemu also trusts (force_size: creator qem2).
new_vhd() { rm -f "$1"; qemu-img create -q -f vpc -o subformat=dynamic,force_size=on "$1" "${disk_mib}M"; }

echo "== data: ${data_mib} MiB of random data in a ${disk_mib} MiB dynamic VHD ($work) =="
head -c $((data_mib << 20)) /dev/urandom >"$work/data.raw"
cp "$work/data.raw" "$work/disk.raw"
truncate -s "${disk_mib}M" "$work/disk.raw"
new_vhd "$work/disk.vhd"
start fill "$work/fill.sock" "$vhd" serve --socket "$work/fill.sock" "$work/disk.vhd"
echo "nbdcopy round trip of ${data_mib} MiB through vhd serve:"
nbdcopy --flush "$work/data.raw" "nbd+unix:///?socket=$work/fill.sock"
nbdcopy "nbd+unix:///?socket=$work/fill.sock" "$work/back.raw"
cmp "$work/back.raw" "$work/disk.raw" && echo "  read back identical"
rm -f "$work/back.raw"
stop_all
qemu-img compare -q -f vpc -F raw "$work/disk.vhd" "$work/disk.raw" && echo "  qemu-img compare: identical"

# measure WORKLOAD SERVER ROUND ARGS...: one fio run; appends a row
# "workload server round iops MiB/s cpu-us-per-request" to the results.
measure() {
  local name="$1" s="$2" round="$3"
  shift 3
  local sock="$work/$s.sock" pid="${spid[$s]}" t0 out
  t0=$(cpu_ticks "$pid")
  out=$(fio --name=b --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --runtime="$runtime" \
    --time_based --output-format=json "$@" 2>/dev/null)
  python3 -c '
import json, sys
name, s, rnd, t0, t1, tck = sys.argv[1:7]
out = sys.stdin.read()  # fio --ioengine=nbd prints a line before the JSON
j = json.loads(out[out.index("{"):])["jobs"][0]
x = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
ops = x["total_ios"] + j["sync"]["total_ios"]
cpu = (int(t1) - int(t0)) / int(tck) * 1e6 / max(ops, 1)
print("%s\t%s\t%s\t%.0f\t%.0f\t%.1f" % (name, s, rnd, x["iops"], x["bw_bytes"] / 2**20, cpu))
' "$name" "$s" "$round" "$t0" "$(cpu_ticks "$pid")" "$tck" <<<"$out" | tee -a "$results"
}

# order ROUND: the servers, rotated by round so none always goes first.
order() {
  local all=(vhd qemu nbdkit) i=$(($1 % 3))
  echo "${all[@]:i}" "${all[@]:0:i}"
}

readsize="${data_mib}M"
workloads=(
  "randread-4k-qd1|--rw=randread --bs=4k --iodepth=1 --size=$readsize"
  "randread-4k-qd32|--rw=randread --bs=4k --iodepth=32 --size=$readsize"
  "seqread-1m-qd8|--rw=read --bs=1M --iodepth=8 --size=$readsize"
)
start vhd "$work/vhd.sock" "$vhd" serve --read-only --socket "$work/vhd.sock" "$work/disk.vhd"
start qemu "$work/qemu.sock" qemu-nbd -r -f vpc -t -e 8 --socket="$work/qemu.sock" "$work/disk.vhd"
start nbdkit "$work/nbdkit.sock" nbdkit -f -r -U "$work/nbdkit.sock" file "$work/disk.raw"
for round in $(seq "$rounds"); do
  for w in "${workloads[@]}"; do
    for s in $(order "$round"); do
      # shellcheck disable=SC2086
      measure "${w%%|*}" "$s" "$round" ${w#*|}
    done
  done
  for s in $(order "$round"); do
    # Everything the export holds; all three skip the holes.
    t0=$(date +%s.%N)
    nbdcopy "nbd+unix:///?socket=$work/$s.sock" null:
    t1=$(date +%s.%N)
    printf 'nbdcopy-null\t%s\t%s\t-\t%s\t-\n' "$s" "$round" \
      "$(python3 -c "print('%.0f' % ($data_mib / ($t1 - $t0)))")" | tee -a "$results"
  done
done
stop_all

# Writes go into fresh images: a dynamic VHD for vhd and qemu-nbd, a
# sparse raw file for nbdkit.
write_workloads=(
  "seqwrite-1m-qd8|--rw=write --bs=1M --iodepth=8 --size=${data_mib}M"
  "randwrite-4k-qd32-fresh|--rw=randwrite --bs=4k --iodepth=32 --size=${disk_mib}M"
  "randwrite-4k-qd32-fresh-fsync32|--rw=randwrite --bs=4k --iodepth=32 --fsync=32 --size=${disk_mib}M"
)
for round in $(seq "$rounds"); do
  for w in "${write_workloads[@]}"; do
    new_vhd "$work/w-vhd.vhd"
    new_vhd "$work/w-qemu.vhd"
    rm -f "$work/w.raw"
    truncate -s "${disk_mib}M" "$work/w.raw"
    start vhd "$work/vhd.sock" "$vhd" serve --socket "$work/vhd.sock" "$work/w-vhd.vhd"
    start qemu "$work/qemu.sock" qemu-nbd -f vpc -t -e 8 --socket="$work/qemu.sock" "$work/w-qemu.vhd"
    start nbdkit "$work/nbdkit.sock" nbdkit -f -U "$work/nbdkit.sock" file "$work/w.raw"
    for s in $(order "$round"); do
      # shellcheck disable=SC2086
      measure "${w%%|*}" "$s" "$round" ${w#*|}
    done
    stop_all
  done
done

echo
echo "== medians of $rounds rounds ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), ${runtime}s per fio run) =="
python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
names = list(dict.fromkeys(r[0] for r in rows))
def med(name, s, col):
    v = [float(r[col]) for r in rows if r[0] == name and r[1] == s and r[col] != "-"]
    return statistics.median(v) if v else None
print("%-32s %14s %14s %14s %8s %9s   %s" % ("workload", "vhd serve", "qemu-nbd vpc", "nbdkit raw", "vhd/qemu", "vhd/nbdkit", "CPU us/request vhd qemu nbdkit"))
for n in names:
    col = 4 if n.startswith(("seq", "nbdcopy")) else 3
    unit = "MiB/s" if col == 4 else "IOPS"
    v = [med(n, s, col) for s in ("vhd", "qemu", "nbdkit")]
    cpu = [med(n, s, 5) for s in ("vhd", "qemu", "nbdkit")]
    fmt = lambda x: "%.0f %s" % (x, unit) if x is not None else "-"
    ratio = lambda a, b: "%.2fx" % (a / b) if a and b else "-"
    cpus = " ".join("%.1f" % c if c is not None else "-" for c in cpu)
    print("%-32s %14s %14s %14s %8s %9s   %s" % (n, fmt(v[0]), fmt(v[1]), fmt(v[2]), ratio(v[0], v[1]), ratio(v[0], v[2]), cpus))
EOF
