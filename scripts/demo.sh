#!/usr/bin/env bash
# The main job on a built-in default: build `vhd`, make a sample disk with
# some data and a large hole, convert it to a dynamic VHD (zero blocks
# elided), inspect and check it, convert it back and compare; then cut a
# differencing child, show the chain, flatten it and merge it back.
# Usage: scripts/demo.sh [WORKDIR]   (default: a fresh temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."

work="${1:-$(mktemp -d -t vhdkit-demo.XXXXXX)}"
mkdir -p "$work"
go build -o "$work/vhd" ./tools/vhd
vhd="$work/vhd"

echo "== building a 256 MiB sample disk: 32 MiB of data, then a hole =="
raw="$work/sample.raw"
rm -f "$raw" "$work/sample.vhd" "$work/fixed.vhd" "$work/back.raw"
chmod u+w "$work"/*.vhd 2>/dev/null || true
head -c $((32 << 20)) /dev/urandom >"$raw"
truncate -s 256M "$raw"

echo "== vhd convert --to dynamic =="
"$vhd" convert --to dynamic "$raw" "$work/sample.vhd"
echo "== vhd info =="
"$vhd" info "$work/sample.vhd"
echo "== vhd info --json =="
"$vhd" info --json "$work/sample.vhd"
echo "== vhd check =="
"$vhd" check "$work/sample.vhd"
echo "== vhd convert --to fixed --align 1M, then back to raw =="
"$vhd" convert --to fixed --align 1M "$work/sample.vhd" "$work/fixed.vhd"
"$vhd" convert --to raw "$work/fixed.vhd" "$work/back.raw"
cmp "$raw" "$work/back.raw"
echo "round trip identical"

echo "== a differencing chain: snapshot, tree, info, flatten, merge =="
rm -f "$work/top.vhd" "$work/flat.vhd"
"$vhd" snapshot "$work/sample.vhd" "$work/top.vhd"
"$vhd" tree "$work"
"$vhd" info "$work/top.vhd" | grep -E "^(type|parent name|chain layer)"
"$vhd" merge --to "$work/flat.vhd" --type dynamic "$work/top.vhd"
"$vhd" merge "$work/top.vhd"
"$vhd" check "$work/sample.vhd"
echo "files in $work:"
ls -ls "$work"
