#!/usr/bin/env bash
# A/B benchmark of two builds of `vhd serve`: both serve the same image
# (read-only) at once, and fio runs the same workload against each in
# turn, ROUNDS times, alternating which goes first. Prints each run and
# the medians: IOPS and the server's CPU time per request (from /proc).
# On a shared machine only a comparison inside one run means anything.
#
# Usage: scripts/bench-nbd-ab.sh OLD-REV [NEW-REV|worktree] [WORKDIR]
#   RUNTIME=10 seconds per fio run   ROUNDS=5   DATA_MIB=256
#   FIO="--rw=randread --bs=4k --iodepth=32" (the workload)
set -euo pipefail
cd "$(dirname "$0")/.."

old="$1" new="${2:-worktree}"
work="${3:-$(mktemp -d -t vhdkit-bench-ab.XXXXXX)}"
runtime="${RUNTIME:-10}" rounds="${ROUNDS:-5}" data_mib="${DATA_MIB:-256}"
read -r -a workload <<<"${FIO:---rw=randread --bs=4k --iodepth=32}"
mkdir -p "$work"

# build REV OUT: builds tools/vhd at a revision (or the work tree).
build() {
  if [ "$1" = worktree ]; then
    go build -o "$2" ./tools/vhd
    return
  fi
  local src="$work/src-$1"
  rm -rf "$src" && mkdir -p "$src"
  git archive "$1" | tar -x -C "$src"
  (cd "$src" && go build -o "$2" ./tools/vhd)
}
build "$old" "$work/vhd-a"
build "$new" "$work/vhd-b"

"$work/vhd-b" create --type dynamic --size "$((2 * data_mib))M" "$work/disk.vhd" >/dev/null
head -c "$((data_mib << 20))" /dev/urandom >"$work/data.raw"
declare -A pid
cleanup() { for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start() { # start NAME ARGS...: serves and waits for the socket
  local name="$1" sock="$work/$1.sock"
  shift
  rm -f "$sock"
  "$work/vhd-$name" serve --socket "$sock" "$@" "$work/disk.vhd" >/dev/null 2>"$work/$name.log" &
  pid[$name]=$!
  for _ in $(seq 100); do [ -S "$sock" ] && return 0; sleep 0.05; done
  echo "vhd-$name did not start" >&2 && cat "$work/$name.log" >&2 && exit 1
}
start b
nbdcopy --flush "$work/data.raw" "nbd+unix:///?socket=$work/b.sock"
kill "${pid[b]}" && wait "${pid[b]}" || true
start a --read-only
start b --read-only

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
results="$work/results.tsv"
: >"$results"
measure() { # measure NAME ROUND
  local t0 out
  t0=$(cpu_ticks "${pid[$1]}")
  out=$(fio --name=ab --ioengine=nbd --uri="nbd+unix:///?socket=$work/$1.sock" --size="${data_mib}M" \
    --runtime="$runtime" --time_based --output-format=json "${workload[@]}" 2>/dev/null)
  python3 -c '
import json, sys
name, rnd, t0, t1, tck = sys.argv[1:6]
out = sys.stdin.read()
j = json.loads(out[out.index("{"):])["jobs"][0]
x = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
cpu = (int(t1) - int(t0)) / int(tck) * 1e6 / max(x["total_ios"], 1)
print("%s\t%s\t%.0f\t%.2f" % (name, rnd, x["iops"], cpu))
' "$1" "$2" "$t0" "$(cpu_ticks "${pid[$1]}")" "$tck" <<<"$out" | tee -a "$results"
}
echo "name	round	IOPS	CPU-us/request   (a = $old, b = $new; fio ${workload[*]})"
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="a b"; else order="b a"; fi
  for n in $order; do measure "$n" "$round"; done
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
med = {n: [statistics.median(float(r[c]) for r in rows if r[0] == n) for c in (2, 3)] for n in "ab"}
print("medians: a %.0f IOPS %.2f us/req, b %.0f IOPS %.2f us/req, b/a IOPS %.3f" %
      (med["a"][0], med["a"][1], med["b"][0], med["b"][1], med["b"][0] / med["a"][0]))
EOF
