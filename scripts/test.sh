#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the packages the
# tests use, then go vet, staticcheck, go test -race (unit, interop with the real
# peers, power-loss simulation, fuzz seeds), then a short fuzzing burst
# per fuzz target. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
go version
go vet ./...
# staticcheck finds what vet does not (it found a merge journal whose
# write error was dropped); pinned, fetched through the module proxy.
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
go test -race -count=1 -timeout 25m ./...

# A short fuzzing burst per target (the seeds already ran above). The
# budget is a count of executions, not a duration: with a duration, Go
# before 1.27 can fail a target with a bare "context deadline exceeded"
# as the time runs out (a race in the fuzzing coordinator, Go issue
# 75804), which is no finding. 50000 runs take a few seconds per target.
fuzztime="${FUZZTIME:-50000x}"
for pkg in $(go list ./... ); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "fuzz $pkg $target for $fuzztime"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
  done
done
echo "all tests passed"
