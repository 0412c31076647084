#!/usr/bin/env bash
# vhd backup benchmark: a full and an incremental pull of a disk that
# `vhd serve` serves, against nbdcopy of the same backup export into a
# raw file. The disk is a DISK_MIB dynamic VHD holding DATA_MIB of random
# data; between the two backups CHANGE_MIB are rewritten in 1 MiB pieces
# at random places. Each round: begin, pull (full), nbdcopy, end; write
# the changes; begin, pull --since (incremental), nbdcopy, end. Prints a
# line per measurement (seconds, bytes read from the server, bytes of
# the file written) and the medians over ROUNDS.
#
# Usage: scripts/bench-backup.sh [WORKDIR]
# (nbdsh is run as /usr/bin/python3 -m nbd: that python has libnbd.)
#   ROUNDS=3 DISK_MIB=1024 DATA_MIB=1024 CHANGE_MIB=64 CONNECTIONS=4
# Wall-clock times vary by 2x on a shared machine: compare the numbers
# of one round, not numbers across runs.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-3}"
disk_mib="${DISK_MIB:-1024}"
data_mib="${DATA_MIB:-1024}"
change_mib="${CHANGE_MIB:-64}"
conns="${CONNECTIONS:-4}"
work="${1:-$(mktemp -d -t vhdkit-bench-backup.XXXXXX)}"
mkdir -p "$work"
for t in nbdcopy /usr/bin/python3; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done

go build -o "$work/vhd" ./tools/vhd
vhd="$work/vhd"
results="$work/results.tsv"
: >"$results"
spid=""
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
field() { python3 -c "import json, sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
alloc() { echo $(($(stat -c %b "$1") * 512)); }
# served_read: the bytes the backup export has served so far (its NBD
# statistics), so each tool is charged what it really read.
served_read() {
  "$vhd" ctl --json "$ctl" status | python3 -c "
import json, sys
for e in json.load(sys.stdin)['exports']:
    if e['name'] == 'disk-backup':
        print(e['nbd']['bytes_read'])"
}

# pull_round KIND OUT [--since PREV]: begin, pull, nbdcopy, end.
pull_round() {
  local kind="$1" out="$2"
  shift 2
  local uri t0 pulled
  uri="$("$vhd" backup begin --json "$ctl" disk | python3 -c "import json, sys; print(json.load(sys.stdin)['uris'][0])")"
  t0="$(now)"
  pulled="$("$vhd" backup pull --json --no-progress --connections "$conns" "$uri" "$out" "$@")"
  local secs read1 read2
  secs="$(since "$t0")"
  read1="$(served_read)"
  [ "$(echo "$pulled" | field read_bytes)" = "$read1" ] || echo "note: pull says it read $(echo "$pulled" | field read_bytes), the server served $read1" >&2
  printf '%s\tvhd-backup-pull\t%s\t%s\t%s\n' "$kind" "$secs" "$read1" "$(alloc "$out")" | tee -a "$results"
  rm -f "$work/copy.raw"
  t0="$(now)"
  nbdcopy --connections="$conns" "$uri" "$work/copy.raw"
  secs="$(since "$t0")"
  read2="$(served_read)"
  printf '%s\tnbdcopy\t%s\t%s\t%s\n' "$kind" "$secs" "$((read2 - read1))" "$(alloc "$work/copy.raw")" | tee -a "$results"
  rm -f "$work/copy.raw"
  "$vhd" backup end --no-progress "$ctl" disk >/dev/null
}

printf 'kind\ttool\tseconds\tbytes_read\tfile_bytes\n'
for r in $(seq "$rounds"); do
  [ -n "$spid" ] && { kill "$spid"; wait "$spid" 2>/dev/null || true; }
  rm -rf "$work/srv" "$work/bk"
  mkdir -p "$work/srv" "$work/bk"
  "$vhd" create --size "${disk_mib}M" "$work/srv/disk.vhd" >/dev/null
  sock="$work/srv/nbd.sock" ctl="$work/srv/ctl.sock"
  "$vhd" serve --socket "$sock" --control "$ctl" "$work/srv/disk.vhd=disk" >/dev/null 2>"$work/serve.log" &
  spid=$!
  for _ in $(seq 200); do [ -S "$ctl" ] && break; sleep 0.05; done
  head -c "$((data_mib << 20))" /dev/urandom >"$work/fill.raw"
  nbdcopy "$work/fill.raw" "nbd+unix:///disk?socket=$sock"
  rm -f "$work/fill.raw"

  pull_round full "$work/bk/full.vhd"
  CHANGE_MIB="$change_mib" DISK_MIB="$disk_mib" /usr/bin/python3 -m nbd -u "nbd+unix:///disk?socket=$sock" -c '
import os, random
rng = random.Random(7)
blocks = rng.sample(range(int(os.environ["DISK_MIB"])), int(os.environ["CHANGE_MIB"]))
for b in blocks:
    h.pwrite(os.urandom(1 << 20), b << 20)
h.flush()
'
  pull_round incremental "$work/bk/incr.vhd" --since "$work/bk/full.vhd"
  "$vhd" check "$work/bk/incr.vhd" >/dev/null
done

echo
echo "medians over $rounds rounds (seconds, MiB read from the server, MiB of file written):"
python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    kind, tool, secs, read, file = line.split("\t")
    rows.setdefault((kind, tool), []).append((float(secs), int(read), int(file)))
for (kind, tool), v in rows.items():
    s = sorted(x[0] for x in v)
    print(f"{kind:12} {tool:16} {statistics.median(s):6.2f} s [{s[0]:.2f}..{s[-1]:.2f}]"
          f"  read {statistics.median(x[1] for x in v) / 2**20:7.1f} MiB"
          f"  file {statistics.median(x[2] for x in v) / 2**20:7.1f} MiB")
EOF
