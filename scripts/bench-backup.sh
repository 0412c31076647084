#!/usr/bin/env bash
# vhd backup benchmark: a full and an incremental pull of a disk that
# `vhd serve` serves, against nbdcopy of the same backup export into a
# raw file. The disk is a DISK_MIB dynamic VHD holding DATA_MIB of random
# data; between the two backups CHANGE_MIB are rewritten in 1 MiB pieces
# at random places. Each round: begin, pull (full), nbdcopy, end; write
# the changes; begin, pull --since (incremental), nbdcopy, end. nbdcopy
# runs twice: as is, and with --flush (its output made durable at the
# end, as a pull's backup is); the tools take turns at going first.
# Prints a line per measurement (seconds, bytes the server served to the
# tool, bytes of the file written) and the medians over ROUNDS.
#
# With MODE=tls it measures instead a full pull over TLS against one in
# plaintext: each round serves a new disk of DATA_MIB random data twice,
# once plain and once with TLS (--tls-cert --tls-key --tls-ca, a CA and
# certificates made with openssl), the two taking turns at going first,
# and pulls a full backup from each: plaintext over the unix socket and
# over TCP 127.0.0.1, TLS over TCP 127.0.0.1 (lines plain-unix,
# plain-tcp, tls-tcp).
#
# Usage: scripts/bench-backup.sh [WORKDIR]
# (nbdsh is run as /usr/bin/python3 -m nbd: that python has libnbd.)
#   ROUNDS=3 DISK_MIB=1024 DATA_MIB=1024 CHANGE_MIB=64 CONNECTIONS=4 MODE=tls
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

# run_pull KIND URI OUT [--since PREV]: vhd backup pull, timed.
run_pull() {
  local kind="$1" uri="$2" out="$3" t0 secs before pulled
  shift 3
  before="$(served_read)"
  t0="$(now)"
  pulled="$("$vhd" backup pull --json --no-progress --connections "$conns" "$uri" "$out" "$@")"
  secs="$(since "$t0")"
  printf '%s\tvhd-backup-pull\t%s\t%s\t%s\n' "$kind" "$secs" "$(($(served_read) - before))" "$(alloc "$out")" | tee -a "$results"
  [ "$(echo "$pulled" | field read_bytes)" = "$(($(served_read) - before))" ] || echo "note: pull's own count differs from the server's" >&2
}

# run_nbdcopy KIND URI [--flush]: nbdcopy of the export into a raw file
# (with --flush, made durable at the end, as a pull's backup is).
run_nbdcopy() {
  local kind="$1" uri="$2" t0 secs before tool="nbdcopy"
  shift 2
  [ $# -gt 0 ] && tool="nbdcopy $*"
  rm -f "$work/copy.raw"
  before="$(served_read)"
  t0="$(now)"
  nbdcopy --connections="$conns" "$@" "$uri" "$work/copy.raw"
  secs="$(since "$t0")"
  printf '%s\t%s\t%s\t%s\t%s\n' "$kind" "$tool" "$secs" "$(($(served_read) - before))" "$(alloc "$work/copy.raw")" | tee -a "$results"
  rm -f "$work/copy.raw"
}

# pull_round ROUND KIND OUT [--since PREV]: begin; the pull and nbdcopy
# (plain and --flush), taking turns at going first; end.
pull_round() {
  local round="$1" kind="$2" out="$3" uri
  shift 3
  uri="$("$vhd" backup begin --json "$ctl" disk | python3 -c "import json, sys; print(json.load(sys.stdin)['uris'][0])")"
  if [ $((round % 2)) = 0 ]; then
    run_pull "$kind" "$uri" "$out" "$@"
    run_nbdcopy "$kind" "$uri"
    run_nbdcopy "$kind" "$uri" --flush
  else
    run_nbdcopy "$kind" "$uri" --flush
    run_nbdcopy "$kind" "$uri"
    run_pull "$kind" "$uri" "$out" "$@"
  fi
  "$vhd" backup end --no-progress "$ctl" disk >/dev/null
}

# medians prints the medians of the results.
medians() {
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
    print(f"{kind:12} {tool:24} {statistics.median(s):6.2f} s [{s[0]:.2f}..{s[-1]:.2f}]"
          f"  read {statistics.median(x[1] for x in v) / 2**20:7.1f} MiB"
          f"  file {statistics.median(x[2] for x in v) / 2**20:7.1f} MiB")
EOF
}

# make_pki DIR: a CA, and a server and a client certificate for
# 127.0.0.1 and localhost, in libnbd's file names.
make_pki() {
  local d="$1" who
  command -v openssl >/dev/null || { echo "openssl missing (MODE=tls makes its certificates with it)" >&2; exit 1; }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/ca-key.pem" -out "$d/ca-cert.pem" \
    -days 2 -subj /CN=bench-ca 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$d/ext.cnf"
  for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/$who-key.pem" -out "$d/$who.csr" \
      -subj "/CN=$who" 2>/dev/null
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca-cert.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
      -out "$d/$who-cert.pem" -days 2 -extfile "$d/ext.cnf" 2>/dev/null
  done
}

# tls_pull WHICH: serve a new disk of DATA_MIB random data, plain
# (WHICH=plain: pulled over the unix socket and over TCP) or with TLS
# (WHICH=tls: over TCP), begin a backup, pull it full, end, stop.
tls_pull() {
  local which="$1" args=() uris uri kind t0 secs certs="" pulled
  rm -rf "$work/srv" "$work/bk"
  mkdir -p "$work/srv" "$work/bk"
  "$vhd" create --size "${disk_mib}M" "$work/srv/disk.vhd" >/dev/null
  sock="$work/srv/nbd.sock" ctl="$work/srv/ctl.sock"
  if [ "$which" = tls ]; then
    args=(--tls-cert "$pki/server-cert.pem" --tls-key "$pki/server-key.pem" --tls-ca "$pki/ca-cert.pem")
    certs="&tls-certificates=$pki"
  fi
  "$vhd" serve --socket "$sock" --listen 127.0.0.1:0 --control "$ctl" "${args[@]}" "$work/srv/disk.vhd=disk" >/dev/null 2>"$work/serve.log" &
  spid=$!
  for _ in $(seq 200); do [ -S "$ctl" ] && break; sleep 0.05; done
  head -c "$((data_mib << 20))" /dev/urandom >"$work/fill.raw"
  uri="nbd+unix:///disk?socket=$sock"
  [ "$which" = tls ] && uri="nbds+unix:///disk?socket=$sock"
  nbdcopy "$work/fill.raw" "$uri$certs"
  rm -f "$work/fill.raw"
  uris="$("$vhd" backup begin --json "$ctl" disk | python3 -c "import json, sys; print(*json.load(sys.stdin)['uris'])")"
  for uri in $uris; do
    case "$which:$uri" in
      plain:nbd+unix*) kind=plain-unix ;;
      plain:nbd://*) kind=plain-tcp ;;
      tls:nbds://*) kind=tls-tcp ;;
      *) continue ;;
    esac
    rm -f "$work/bk/full.vhd"
    t0="$(now)"
    if [ "$which" = tls ]; then
      pulled="$("$vhd" backup pull --json --no-progress --connections "$conns" --tls-ca "$pki/ca-cert.pem" \
        --tls-cert "$pki/client-cert.pem" --tls-key "$pki/client-key.pem" "$uri" "$work/bk/full.vhd")"
    else
      pulled="$("$vhd" backup pull --json --no-progress --connections "$conns" "$uri" "$work/bk/full.vhd")"
    fi
    secs="$(since "$t0")"
    printf 'full\t%s\t%s\t%s\t%s\n' "$kind" "$secs" "$(echo "$pulled" | field read_bytes)" "$(alloc "$work/bk/full.vhd")" | tee -a "$results"
    "$vhd" check "$work/bk/full.vhd" >/dev/null
  done
  "$vhd" backup end --no-progress "$ctl" disk >/dev/null
  kill "$spid"
  wait "$spid" 2>/dev/null || true
  spid=""
}

if [ "${MODE:-}" = tls ]; then
  pki="$work/pki"
  mkdir -p "$pki"
  make_pki "$pki"
  printf 'kind\ttool\tseconds\tbytes_read\tfile_bytes\n'
  for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 0 ]; then
      tls_pull plain
      tls_pull tls
    else
      tls_pull tls
      tls_pull plain
    fi
  done
  medians
  exit 0
fi

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

  pull_round "$r" full "$work/bk/full.vhd"
  CHANGE_MIB="$change_mib" DISK_MIB="$disk_mib" /usr/bin/python3 -m nbd -u "nbd+unix:///disk?socket=$sock" -c '
import os, random
rng = random.Random(7)
blocks = rng.sample(range(int(os.environ["DISK_MIB"])), int(os.environ["CHANGE_MIB"]))
for b in blocks:
    h.pwrite(os.urandom(1 << 20), b << 20)
h.flush()
'
  pull_round "$r" incremental "$work/bk/incr.vhd" --since "$work/bk/full.vhd"
  "$vhd" check "$work/bk/incr.vhd" >/dev/null
done

medians
