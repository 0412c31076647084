#!/usr/bin/env bash
# FUSE exports of one VHD side by side: `vhd mount`'s disk file,
# qemu-storage-daemon's FUSE export (vpc driver) and vhdimount (libvhdi),
# the same fio jobs on each, numbers and ratios printed at the end.
#
#   scripts/bench-fuse.sh [RUNTIME_SECONDS]   (default 10 per job)
#   WRITE_ROUNDS=5 scripts/bench-fuse.sh 8      (write rounds, default 3)
#
# The write job is disk-bound and this disk is shared, so it runs
# WRITE_ROUNDS times per export, the exports taking turns going first,
# each round on a fresh synced copy of the image, right after 1.5 GiB of
# memory was written and freed (this VM hands idle memory back to its
# host and the first touch of it costs a host fault; see
# docs/BENCHMARKS.md, conversion); the median is reported.
#
# Needs root or fusermount3, fio, qemu-img, qemu-storage-daemon and
# vhdimount (scripts/setup.sh installs them). The image: 2 GiB dynamic,
# the first GiB random data. Each export gets its own copy of it, so the
# write job allocates the same blocks on each. Results vary +-30% from
# run to run on shared machines: compare within one run.
set -euo pipefail
cd "$(dirname "$0")/.."

runtime="${1:-10}"
write_rounds="${WRITE_ROUNDS:-3}"
work="$(mktemp -d /var/tmp/bench-fuse.XXXXXX)"
export XDG_RUNTIME_DIR="$work/run"
vhd="$work/vhd"
qsd_pid=""
vhdi_mnt=""
cleanup() {
  set +e
  [ -n "$qsd_pid" ] && kill "$qsd_pid" 2>/dev/null && wait "$qsd_pid" 2>/dev/null
  mountpoint -q "$work/vmnt" && "$vhd" umount "$work/vmnt" >/dev/null
  [ -n "$vhdi_mnt" ] && mountpoint -q "$vhdi_mnt" && umount "$vhdi_mnt"
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$vhd" ./tools/vhd
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, kernel $(uname -r), $(fio --version), $(qemu-storage-daemon --version | head -1)"

# The image: 1 GiB of random data in a 2 GiB dynamic VHD.
head -c 1G /dev/urandom > "$work/data.raw"
truncate -s 2G "$work/data.raw"
"$vhd" convert --to dynamic --no-progress "$work/data.raw" "$work/base.vhd" >/dev/null
rm "$work/data.raw"
for n in vhd qsd; do cp --sparse=always "$work/base.vhd" "$work/$n.vhd"; done
cat "$work"/*.vhd > /dev/null # warm page cache, as for the peers' numbers
# Write the copies out now: otherwise their dirty pages are flushed while
# the first export's write job runs, and its final fsync pays for them.
sync

# fio JOB FILE: one job, JSON out; prints "MiB/s IOPS".
fio_job() {
  local job=$1 file=$2
  local common=(--filename="$file" --ioengine=libaio --direct=1 --output-format=json --name="$job")
  local args
  case $job in
    seqread) args=(--rw=read --bs=1M --iodepth=8 --size=1G --runtime="$runtime" --time_based) ;;
    randread) args=(--rw=randread --bs=4k --iodepth=32 --size=1G --runtime="$runtime" --time_based) ;;
    seqwrite) args=(--rw=write --bs=1M --iodepth=8 --offset=1G --size=512M --end_fsync=1) ;;
  esac
  fio "${common[@]}" "${args[@]}" | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
side = j["read"] if j["read"]["io_bytes"] else j["write"]
print("%.0f %.0f" % (side["bw_bytes"] / 2**20, side["iops"]))'
}

declare -A res
jobs=(seqread randread seqwrite)

# Mounting and unmounting each export. vhd mount --no-undo: writes go to
# the image itself, as qemu-storage-daemon's do.
mount_vhd() {
  mkdir -p "$work/vmnt"
  "$vhd" mount --no-undo "$1" "$work/vmnt" >/dev/null
  target="$work/vmnt/disk"
}
umount_vhd() {
  "$vhd" umount "$work/vmnt" >/dev/null
  "$vhd" check "$1" >/dev/null
}
# qemu-storage-daemon's FUSE export: its mount point is a file.
mount_qsd() {
  touch "$work/qmnt"
  qemu-storage-daemon --blockdev driver=file,node-name=f,filename="$1" \
    --blockdev driver=vpc,node-name=v,file=f \
    --export type=fuse,id=e,node-name=v,mountpoint="$work/qmnt",writable=on &
  qsd_pid=$!
  for _ in $(seq 100); do mountpoint -q "$work/qmnt" && break; sleep 0.1; done
  mountpoint -q "$work/qmnt" || { echo "bench-fuse: qemu-storage-daemon did not mount" >&2; exit 1; }
  target="$work/qmnt"
}
umount_qsd() {
  kill "$qsd_pid"; wait "$qsd_pid" 2>/dev/null || true; qsd_pid=""
}

# Reads: one pass per export on its copy.
for n in vhd qsd; do
  "mount_$n" "$work/$n.vhd"
  for j in seqread randread; do res[$n,$j]=$(fio_job "$j" "$target"); done
  "umount_$n" "$work/$n.vhd"
done

warm_memory() {
  head -c 1536M /dev/zero > "$work/warm"
  rm -f "$work/warm"
}
# write_round N: a fresh copy of the image, synced, memory warmed, then
# the write job.
write_round() {
  local n=$1 img="$work/w-$1.vhd"
  rm -f "$img"
  cp --sparse=always "$work/base.vhd" "$img"
  "mount_$n" "$img"
  warm_memory
  sync
  local r; r=$(fio_job seqwrite "$target")
  "umount_$n" "$img"
  rm -f "$img"
  writes[$n]="${writes[$n]:-} ${r%% *}"
  echo "  seqwrite round $round $n: ${r%% *} MiB/s" >&2
}
declare -A writes
for round in $(seq 1 "$write_rounds"); do
  if [ $((round % 2)) = 1 ]; then write_round vhd; write_round qsd; else write_round qsd; write_round vhd; fi
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
for n in vhd qsd; do res[$n,seqwrite]="$(echo "${writes[$n]}" | median) 0"; done

# vhdimount: read-only; reads only. Its FUSE file does not take O_DIRECT
# everywhere: fall back to buffered reads if direct ones fail.
vhdi_mnt="$work/imnt"; mkdir -p "$vhdi_mnt"
vhdimount "$work/base.vhd" "$vhdi_mnt" >/dev/null
for _ in $(seq 50); do [ -e "$vhdi_mnt/vhdi1" ] && break; sleep 0.1; done
for j in seqread randread; do
  res[vhdi,$j]=$(fio_job "$j" "$vhdi_mnt/vhdi1" 2>/dev/null || echo "0 0")
done
umount "$vhdi_mnt"; vhdi_mnt=""

printf '\n%-10s %22s %22s %22s %10s %10s\n' job "vhd mount" qemu-storage-daemon vhdimount "vhd/qsd" "vhd/vhdi"
for j in "${jobs[@]}"; do
  read -r vb vi <<<"${res[vhd,$j]}"
  read -r qb qi <<<"${res[qsd,$j]}"
  read -r ib ii <<<"${res[vhdi,$j]:-0 0}"
  if [ "$j" = randread ]; then a=$vi b=$qi c=$ii unit=IOPS; else a=$vb b=$qb c=$ib unit=MiB/s; fi
  cshow="$c"; [ "$c" = 0 ] && cshow="-"
  printf '%-10s %16s %5s %16s %5s %16s %5s %10s %10s\n' "$j" "$a" "$unit" "$b" "$unit" "$cshow" "$unit" \
    "$(python3 -c "print('%.2fx' % ($a / $b) if $b else '-')")" \
    "$(python3 -c "print('%.1fx' % ($a / $c) if $c else '-')")"
done
